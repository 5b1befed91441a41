//// Gleam API tests against the HF fixtures (test/fixtures). Run by `gleam test`.

import viva_tensor.{
  type Error, type GenerateResult, type Model, Bf16Activations, ContextOverflow,
  FileNotFound, GenerateOpts, InvalidOption, InvalidUtf8, Layers, LoadOpts, Native,
  TopK,
}
import viva_tensor/low_level.{Bias, MaxSeq, NoBias, Tensor}
import viva_tensor/safetensors
import viva_tensor/tokenizer

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
    #("bf16 activations follow HF on the first token", bf16_activations),
    #("a low-level decode_step loop gives generate's tokens", decode_loop),
    #("fp8 prepack + linear shapes and errors", fp8_linear),
    #("safetensors header and tokenizer helpers", helpers),
    #("stream chunks concatenate to generate's text", streaming),
    #("backend_info says what Auto picks and why", backend),
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

fn backend() -> Result(Nil, String) {
  let info = viva_tensor.backend_info()
  case info.cuda_available, info.auto_device, info.gpu_name {
    False, viva_tensor.Cpu, Error(Nil) ->
      case info.cuda_reason == "ok" {
        True -> Error("no CUDA but the reason is ok")
        False -> Ok(Nil)
      }
    True, viva_tensor.Cuda, Ok(_) -> Ok(Nil)
    _, _, _ -> Error("inconsistent backend_info: " <> info.cuda_reason)
  }
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

fn bf16_activations() -> Result(Nil, String) {
  let opts =
    LoadOpts(
      ..viva_tensor.default_load_opts(),
      weights: Native,
      activations: Bf16Activations,
    )
  case viva_tensor.load_model_with(fixture("tiny_gqa"), opts) {
    Ok(model) -> {
      use r <- try(gen(model, expected_prompt("tiny_gqa"), greedy_opts(1)))
      case r.tokens == first(expected_greedy("tiny_gqa")) {
        True -> Ok(Nil)
        False -> Error("bf16-activation first token differs from HF")
      }
    }
    Error(_) -> Error("load_model_with (bf16 activations) failed")
  }
}

fn first(items: List(Int)) -> List(Int) {
  case items {
    [x, ..] -> [x]
    [] -> []
  }
}

fn decode_loop() -> Result(Nil, String) {
  use model <- try(load("tiny_gqa"))
  use cache <- try(lift(low_level.kv_cache_new(model, MaxSeq(64))))
  let ids = expected_ids("tiny_gqa")
  use first <- try(lift(low_level.decode_prompt(model, ids, cache, 0)))
  use rest <- try(continue(model, cache, first, length(ids, 0), 19))
  case [first, ..rest] == expected_greedy("tiny_gqa") {
    True -> Ok(Nil)
    False -> Error("decode_step loop differs from HF greedy")
  }
}

fn continue(
  model,
  cache,
  last: Int,
  pos: Int,
  n: Int,
) -> Result(List(Int), String) {
  case n {
    0 -> Ok([])
    _ -> {
      use next <- try(lift(low_level.decode_step(model, last, cache, pos)))
      use rest <- try(continue(model, cache, next, pos + 1, n - 1))
      Ok([next, ..rest])
    }
  }
}

fn length(items: List(a), acc: Int) -> Int {
  case items {
    [] -> acc
    [_, ..rest] -> length(rest, acc + 1)
  }
}

fn fp8_linear() -> Result(Nil, String) {
  // 4 x 16 weight of ones, input of twos: every output is 32 (exact in E4M3)
  let w = repeat(<<1.0:float-32-little>>, 64, <<>>)
  let x = repeat(<<2.0:float-32-little>>, 16, <<>>)
  use p <- try(
    lift(low_level.prepack_fp8_weight(w, [4, 16], viva_tensor.Block(16))),
  )
  use out <- try(
    lift(low_level.linear_fp8_w8a16(
      Tensor(x, [1, 16], low_level.F32),
      p,
      NoBias,
    )),
  )
  let want = repeat(<<32.0:float-32-little>>, 4, <<>>)
  case out.data == want, out.shape == [1, 4] {
    True, True ->
      case
        low_level.linear_fp8(
          Tensor(x, [1, 15], low_level.F32),
          p,
          Bias(repeat(<<0.0:float-32-little>>, 4, <<>>)),
        )
      {
        Error(viva_tensor.ShapeMismatch(..)) -> Ok(Nil)
        _ -> Error("a wrong input shape was accepted")
      }
    _, _ -> Error("fp8 linear of ones differs from 32")
  }
}

fn repeat(bits: BitArray, n: Int, acc: BitArray) -> BitArray {
  case n {
    0 -> acc
    _ -> repeat(bits, n - 1, <<acc:bits, bits:bits>>)
  }
}

fn helpers() -> Result(Nil, String) {
  use header <- try(lift(safetensors.open_header(fixture("tiny_gqa"))))
  use tok <- try(lift(tokenizer.load(fixture("tiny_gqa") <> "/tokenizer.json")))
  use ids <- try(lift(tokenizer.encode(tok, expected_prompt("tiny_gqa"))))
  case length(header, 0) > 10, ids == expected_ids("tiny_gqa") {
    True, True -> Ok(Nil)
    _, _ -> Error("header or tokenizer ids differ")
  }
}

fn lift(r: Result(a, Error)) -> Result(a, String) {
  case r {
    Ok(v) -> Ok(v)
    Error(e) -> Error(describe(e))
  }
}

@external(erlang, "viva_tensor_gleam_test_ffi", "expected_ids")
fn expected_ids(name: String) -> List(Int)

fn streaming() -> Result(Nil, String) {
  use model <- try(load("tiny_gqa"))
  use want <- try(gen(model, "The quick brown fox", greedy_opts(20)))
  use s <- try(
    lift(viva_tensor.stream(model, "The quick brown fox", greedy_opts(20))),
  )
  use text <- try(drain(s, ""))
  case text == want.text {
    True -> Ok(Nil)
    False -> Error("streamed text differs from generate")
  }
}

fn drain(s: viva_tensor.Stream, acc: String) -> Result(String, String) {
  case viva_tensor.next(s, 30_000) {
    viva_tensor.Chunk(c) -> drain(s, acc <> c)
    viva_tensor.Done(_) -> Ok(acc)
    viva_tensor.Failed(e) -> Error(describe(e))
    viva_tensor.TimedOut -> Error("stream timed out")
  }
}
