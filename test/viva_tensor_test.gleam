//// Gleam API tests against the HF fixtures (test/fixtures). Run by `gleam test`.

import viva_tensor.{
  type Error, type GenerateResult, type Model, ContextOverflow, FileNotFound,
  GenerateOpts, InvalidOption, InvalidUtf8, Layers, LoadOpts, Native, TopK,
}

pub fn main() -> Nil {
  run([
    #("greedy tokens and text equal HF for every fixture", greedy_matches_hf),
    #("a missing checkpoint is FileNotFound", missing_file),
    #("a bad option is InvalidOption", bad_option),
    #("a prompt beyond the context is ContextOverflow", context_overflow),
    #("an invalid UTF-8 prompt is InvalidUtf8", invalid_utf8_prompt),
    #("seeded sampling is reproducible", seeded_sampling),
    #("load options reach the engine", load_opts),
    #("fp8 (the default) follows HF on the first token", fp8_default),
  ])
}

const fixtures = ["tiny_gqa", "tiny_tied_llama3", "tiny_mha_sharded"]

fn greedy_opts(n: Int) {
  GenerateOpts(
    ..viva_tensor.default_generate_opts(),
    max_new_tokens: n,
    stop_on_eos: False,
  )
}

fn greedy_matches_hf() -> Result(Nil, String) {
  each(fixtures, fn(name) {
    use model <- try(load(name))
    use r <- try(gen(model, expected_prompt(name), greedy_opts(20)))
    case r.tokens == expected_greedy(name), r.text == expected_text(name) {
      True, True -> Ok(Nil)
      _, _ -> Error(name <> ": tokens or text differ from HF")
    }
  })
}

fn missing_file() -> Result(Nil, String) {
  case viva_tensor.load_model("/nonexistent/viva/model") {
    Error(FileNotFound(_)) -> Ok(Nil)
    _ -> Error("expected FileNotFound")
  }
}

fn bad_option() -> Result(Nil, String) {
  use model <- try(load("tiny_gqa"))
  let opts = GenerateOpts(..greedy_opts(4), top_k: TopK(0))
  case viva_tensor.generate(model, "Hello", opts) {
    Error(InvalidOption("top_k", _)) -> Ok(Nil)
    _ -> Error("expected InvalidOption(top_k)")
  }
}

fn context_overflow() -> Result(Nil, String) {
  use model <- try(load("tiny_gqa"))
  case viva_tensor.generate(model, "Hello", greedy_opts(1000)) {
    Error(ContextOverflow(needed: _, max: 128)) -> Ok(Nil)
    _ -> Error("expected ContextOverflow(_, 128)")
  }
}

fn invalid_utf8_prompt() -> Result(Nil, String) {
  use model <- try(load("tiny_gqa"))
  case viva_tensor.generate(model, invalid_utf8(), greedy_opts(4)) {
    Error(InvalidUtf8) ->
      // the model still works afterwards
      case gen(model, expected_prompt("tiny_gqa"), greedy_opts(20)) {
        Ok(r) ->
          case r.tokens == expected_greedy("tiny_gqa") {
            True -> Ok(Nil)
            False -> Error("model broken after an error")
          }
        Error(e) -> Error(e)
      }
    _ -> Error("expected InvalidUtf8")
  }
}

fn seeded_sampling() -> Result(Nil, String) {
  use model <- try(load("tiny_tied_llama3"))
  let opts =
    GenerateOpts(
      ..greedy_opts(16),
      temperature: 0.9,
      top_k: TopK(40),
      top_p: 0.95,
      seed: 7,
    )
  use a <- try(gen(model, "Once upon a time", opts))
  use b <- try(gen(model, "Once upon a time", opts))
  case a.tokens == b.tokens {
    True -> Ok(Nil)
    False -> Error("same seed gave different tokens")
  }
}

fn load_opts() -> Result(Nil, String) {
  let opts =
    LoadOpts(
      ..viva_tensor.default_load_opts(),
      num_layers: Layers(1),
      weights: Native,
    )
  case viva_tensor.load_model_with(fixture("tiny_gqa"), opts) {
    Ok(model) -> {
      use r <- try(gen(model, expected_prompt("tiny_gqa"), greedy_opts(20)))
      case r.tokens == expected_greedy("tiny_gqa") {
        False -> Ok(Nil)
        True -> Error("one layer gave the two-layer tokens")
      }
    }
    Error(_) -> Error("load_model_with failed")
  }
}

// helpers

/// The HF-parity path: weights in the checkpoint's own dtype.
fn load(name: String) -> Result(Model, String) {
  let opts = LoadOpts(..viva_tensor.default_load_opts(), weights: Native)
  case viva_tensor.load_model_with(fixture(name), opts) {
    Ok(m) -> Ok(m)
    Error(_) -> Error("cannot load " <> name)
  }
}

fn gen(model: Model, prompt: String, opts) -> Result(GenerateResult, String) {
  case viva_tensor.generate(model, prompt, opts) {
    Ok(r) -> Ok(r)
    Error(e) -> Error(describe(e))
  }
}

fn describe(_e: Error) -> String {
  "generate failed"
}

fn try(r: Result(a, e), next: fn(a) -> Result(b, e)) -> Result(b, e) {
  case r {
    Ok(v) -> next(v)
    Error(e) -> Error(e)
  }
}

fn each(items: List(a), f: fn(a) -> Result(Nil, e)) -> Result(Nil, e) {
  case items {
    [] -> Ok(Nil)
    [x, ..rest] -> try(f(x), fn(_) { each(rest, f) })
  }
}

@external(erlang, "viva_tensor_gleam_test_ffi", "run")
fn run(tests: List(#(String, fn() -> Result(Nil, String)))) -> Nil

@external(erlang, "viva_tensor_gleam_test_ffi", "fixture")
fn fixture(name: String) -> String

@external(erlang, "viva_tensor_gleam_test_ffi", "expected_greedy")
fn expected_greedy(name: String) -> List(Int)

@external(erlang, "viva_tensor_gleam_test_ffi", "expected_text")
fn expected_text(name: String) -> String

@external(erlang, "viva_tensor_gleam_test_ffi", "expected_prompt")
fn expected_prompt(name: String) -> String

@external(erlang, "viva_tensor_gleam_test_ffi", "invalid_utf8")
fn invalid_utf8() -> String

fn fp8_default() -> Result(Nil, String) {
  case viva_tensor.load_model(fixture("tiny_gqa")) {
    Ok(model) -> {
      use r <- try(gen(model, expected_prompt("tiny_gqa"), greedy_opts(1)))
      case r.tokens == first(expected_greedy("tiny_gqa")) {
        True -> Ok(Nil)
        False -> Error("fp8 first token differs from HF")
      }
    }
    Error(_) -> Error("load_model failed")
  }
}

fn first(items: List(Int)) -> List(Int) {
  case items {
    [x, ..] -> [x]
    [] -> []
  }
}
