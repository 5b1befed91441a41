//! Chat templates: the model's own Jinja template (tokenizer_config.json `chat_template`, or
//! GGUF `tokenizer.chat_template`) rendered with minijinja, as HF's `apply_chat_template` does:
//! `messages`, `add_generation_prompt`, `bos_token`, `eos_token`, `raise_exception`, and Python
//! string methods (`.strip()`, `.startswith()`) through minijinja-contrib's pycompat.
//!
//! Templates come from files and are executed, so a render is bounded: fuel (minijinja's
//! budget of instructions and bytes), a recursion depth and an output size, each far above
//! what real templates use (see the constants); past one the render stops with
//! `BadFormat { file: "chat_template", .. }`.
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

/// The `file` of a template error: the BEAM sees `{bad_format, <<"chat_template">>, Detail}`.
pub const TEMPLATE_FILE: &str = "chat_template";
/// Fuel for the template itself. Measured: the real templates (TinyLlama, Llama-3, SmolLM2)
/// spend 95–106 fuel on a 3-message chat of short messages, so this is ×10⁴ headroom and
/// still stops a runaway loop within milliseconds.
const BASE_FUEL: u64 = 1_000_000;
/// Fuel per byte of the messages. Measured: 0.06–0.09 per byte (3 × 30 kB messages took
/// 4313–7598 fuel), so this is ×180 headroom.
const FUEL_PER_INPUT_BYTE: u64 = 16;
/// Nesting of blocks, loops and macro calls. Real templates nest under 10; the default (500)
/// can overflow a dirty scheduler's small stack (40 kwords) with a macro calling itself.
const MAX_RECURSION: usize = 64;
/// Output bytes for the template's own text; plus [`OUTPUT_PER_INPUT_BYTE`] per message byte
/// (the real templates write each message once plus ~300 bytes).
const BASE_OUTPUT: usize = 1 << 20;
const OUTPUT_PER_INPUT_BYTE: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
    /// Where the template came from (error messages).
    origin: PathBuf,
}

/// A special-token entry of tokenizer_config.json: a string or `{"content": ...}`.
fn token_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).unwrap_or("").to_string(),
        _ => String::new(),
    }
}

impl ChatTemplate {
    pub fn new(source: String, bos_token: String, eos_token: String, origin: &Path) -> Self {
        ChatTemplate { source, bos_token, eos_token, origin: origin.to_path_buf() }
    }

    /// The template of a tokenizer_config.json, None when it has none. A list of named
    /// templates picks "default", as transformers does.
    pub fn from_tokenizer_config(path: &Path) -> Result<Option<Self>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::bad_format(path, e.to_string()))?;
        let source = match v.get("chat_template") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(list)) => match list.iter().find(|t| t.get("name").and_then(Value::as_str) == Some("default")) {
                Some(t) => t.get("template").and_then(Value::as_str).unwrap_or("").to_string(),
                None => return Err(Error::bad_format(path, "chat_template list has no \"default\" entry")),
            },
            _ => return Ok(None),
        };
        Ok(Some(ChatTemplate::new(source, token_text(v.get("bos_token")), token_text(v.get("eos_token")), path)))
    }

    /// The prompt text for `messages`; with `add_generation_prompt` the assistant turn is opened.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let bad = |e: minijinja::Error| {
            Error::bad_format(TEMPLATE_FILE, format!("{}: {e}", self.origin.display()))
        };
        let input: usize = messages.iter().map(|m| m.role.len() + m.content.len()).sum::<usize>()
            + self.bos_token.len()
            + self.eos_token.len();
        let mut env = minijinja::Environment::new();
        // as transformers compiles chat templates
        let syntax = minijinja::syntax::SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().map_err(bad)?;
        env.set_syntax(syntax);
        env.set_fuel(Some(BASE_FUEL.saturating_add(FUEL_PER_INPUT_BYTE.saturating_mul(input as u64))));
        env.set_recursion_limit(MAX_RECURSION);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", &self.source).map_err(bad)?;
        let tmpl = env.get_template("chat").map_err(bad)?;
        let limit = BASE_OUTPUT.saturating_add(OUTPUT_PER_INPUT_BYTE.saturating_mul(input));
        let mut out = LimitedWriter { buf: Vec::new(), limit, overflow: false };
        let ctx = minijinja::context! {
            messages => messages.iter().map(|m| minijinja::Value::from_pairs([("role", m.role.as_str()), ("content", m.content.as_str())])).collect::<Vec<_>>(),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        match tmpl.render_captured_to(ctx, &mut out) {
            Ok(_) => {}
            Err(_) if out.overflow => {
                return Err(Error::bad_format(TEMPLATE_FILE, format!("output exceeds {limit} bytes")))
            }
            Err(e) => return Err(bad(e)),
        }
        String::from_utf8(out.buf).map_err(|_| Error::bad_format(TEMPLATE_FILE, "output is not UTF-8"))
    }
}

/// An output buffer that refuses to grow past `limit` bytes.
struct LimitedWriter {
    buf: Vec<u8>,
    limit: usize,
    overflow: bool,
}

impl std::io::Write for LimitedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > self.limit {
            self.overflow = true;
            return Err(std::io::Error::other("template output limit"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
