//! Chat templates: the model's own Jinja template (tokenizer_config.json `chat_template`, or
//! GGUF `tokenizer.chat_template`) rendered with minijinja, as HF's `apply_chat_template` does:
//! `messages`, `add_generation_prompt`, `bos_token`, `eos_token`, `raise_exception`, and Python
//! string methods (`.strip()`, `.startswith()`) through minijinja-contrib's pycompat.
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

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
        let bad = |e: minijinja::Error| Error::bad_format(&self.origin, format!("chat_template: {e}"));
        let mut env = minijinja::Environment::new();
        // as transformers compiles chat templates
        let syntax = minijinja::syntax::SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().map_err(bad)?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", &self.source).map_err(bad)?;
        let tmpl = env.get_template("chat").map_err(bad)?;
        tmpl.render(minijinja::context! {
            messages => messages.iter().map(|m| minijinja::Value::from_pairs([("role", m.role.as_str()), ("content", m.content.as_str())])).collect::<Vec<_>>(),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        })
        .map_err(bad)
    }
}
