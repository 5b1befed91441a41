//! ModelConfig loading (config.json, generation_config.json, shape inference): good inputs
//! read back exactly, every bad input gives its exact `Error` variant.
mod loader_common;

use std::path::Path;

use loader_common::*;
use viva_core::config::{ModelConfig, RopeScaling};
use viva_core::safetensors::Checkpoint;
use viva_core::Error;

// ---------------------------------------------------------------- config.json

/// TinyLlama-1.1B-Chat-v1.0's config.json, verbatim (transformers 4.35 spelling).
const TINYLLAMA_CONFIG: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 1, "eos_token_id": 2,
  "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 5632,
  "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 22,
  "num_key_value_heads": 4, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null,
  "rope_theta": 10000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.35.0", "use_cache": true, "vocab_size": 32000
}"#;

fn cfg(json: &str) -> viva_core::Result<ModelConfig> {
    ModelConfig::from_json_str(json, Path::new("config.json"))
}

/// A small config with one key replaced (or removed when `value` is None).
fn cfg_with(key: &str, value: Option<serde_json::Value>) -> viva_core::Result<ModelConfig> {
    let mut v: serde_json::Value = serde_json::from_str(TINYLLAMA_CONFIG).unwrap();
    let obj = v.as_object_mut().unwrap();
    match value {
        Some(x) => obj.insert(key.into(), x),
        None => obj.remove(key),
    };
    cfg(&v.to_string())
}

#[test]
fn tinyllama_config_parses() {
    let c = cfg(TINYLLAMA_CONFIG).unwrap();
    let want = ModelConfig {
        hidden_size: 2048,
        num_hidden_layers: 22,
        num_attention_heads: 32,
        num_key_value_heads: 4,
        head_dim: 64,
        intermediate_size: 5632,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_scaling: RopeScaling::Default,
        vocab_size: 32000,
        max_position_embeddings: 2048,
        tie_word_embeddings: false,
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
    };
    assert_eq!(c, want);
    assert_eq!((c.q_dim(), c.kv_dim()), (2048, 256));
    c.validate().unwrap();
}

#[test]
fn config_defaults_follow_llama_config() {
    let minimal = r#"{"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "intermediate_size": 512, "vocab_size": 100}"#;
    let c = cfg(minimal).unwrap();
    assert_eq!(c.num_key_value_heads, 4);
    assert_eq!(c.head_dim, 64);
    assert_eq!(c.rms_norm_eps, 1e-6);
    assert_eq!(c.rope_theta, 10000.0);
    assert_eq!(c.rope_scaling, RopeScaling::Default);
    assert_eq!(c.max_position_embeddings, 2048);
    assert!(!c.tie_word_embeddings);
    assert_eq!((c.bos_token_id, c.eos_token_ids.clone()), (Some(1), vec![2]));
    // Explicit nulls: "not set" for the head/kv/theta fields, "none" for the token ids.
    let nulls = r#"{"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": null,
                    "head_dim": null, "rope_theta": null, "intermediate_size": 512, "vocab_size": 100,
                    "bos_token_id": null, "eos_token_id": null}"#;
    let c = cfg(nulls).unwrap();
    assert_eq!((c.num_key_value_heads, c.head_dim, c.rope_theta), (4, 64, 10000.0));
    assert_eq!((c.bos_token_id, c.eos_token_ids), (None, vec![]));
    // An explicit head_dim that differs from hidden/heads is kept (q_dim ≠ hidden).
    let c = cfg_with("head_dim", Some(serde_json::json!(128))).unwrap();
    assert_eq!((c.head_dim, c.q_dim()), (128, 4096));
}

#[test]
fn eos_token_id_int_or_list() {
    let c = cfg_with("eos_token_id", Some(serde_json::json!([128001, 128008, 128009, 128001]))).unwrap();
    assert_eq!(c.eos_token_ids, vec![128001, 128008, 128009]);
    let c = cfg_with("eos_token_id", Some(serde_json::json!(7))).unwrap();
    assert_eq!(c.eos_token_ids, vec![7]);
    assert_bad_format(
        cfg_with("eos_token_id", Some(serde_json::json!(["2"]))).unwrap_err(),
        Path::new("config.json"),
        "eos_token_id",
    );
}

#[test]
fn llama3_rope_scaling_both_spellings() {
    let want = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    };
    // transformers 4.x: rope_theta + rope_scaling with "rope_type" (or the older "type").
    for type_key in ["rope_type", "type"] {
        let mut v: serde_json::Value = serde_json::from_str(TINYLLAMA_CONFIG).unwrap();
        v["rope_theta"] = serde_json::json!(500000.0);
        v["max_position_embeddings"] = serde_json::json!(131072);
        v["rope_scaling"] = serde_json::json!({type_key: "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4, "original_max_position_embeddings": 8192});
        let c = cfg(&v.to_string()).unwrap();
        assert_eq!((c.rope_theta, c.rope_scaling), (500000.0, want));
    }
    // transformers 5: everything under rope_parameters (this is LlamaConfig(...).to_json_string()).
    let mut v: serde_json::Value = serde_json::from_str(TINYLLAMA_CONFIG).unwrap();
    v.as_object_mut().unwrap().remove("rope_theta");
    v.as_object_mut().unwrap().remove("rope_scaling");
    v["rope_parameters"] = serde_json::json!({"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192, "rope_theta": 500000.0, "rope_type": "llama3"});
    let c = cfg(&v.to_string()).unwrap();
    assert_eq!((c.rope_theta, c.rope_scaling), (500000.0, want));
    // original_max_position_embeddings absent → max_position_embeddings, as transformers fills it.
    v["rope_parameters"].as_object_mut().unwrap().remove("original_max_position_embeddings");
    let c = cfg(&v.to_string()).unwrap();
    assert!(matches!(c.rope_scaling, RopeScaling::Llama3 { original_max_position_embeddings: 2048, .. }));
    // transformers 5 default RoPE.
    let c = cfg_with("rope_parameters", Some(serde_json::json!({"rope_theta": 123.0, "rope_type": "default"}))).unwrap();
    assert_eq!((c.rope_theta, c.rope_scaling), (123.0, RopeScaling::Default));
}

#[test]
fn rope_errors_name_the_key() {
    let file = Path::new("config.json");
    let yarn = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
    assert_bad_format(cfg_with("rope_scaling", Some(yarn.clone())).unwrap_err(), file, "\"yarn\"");
    assert_bad_format(cfg_with("rope_parameters", Some(yarn)).unwrap_err(), file, "rope_parameters.rope_type");
    let no_factor = serde_json::json!({"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0});
    assert_bad_format(cfg_with("rope_scaling", Some(no_factor)).unwrap_err(), file, "rope_scaling.factor: missing");
    let bad_factor = serde_json::json!({"rope_type": "llama3", "factor": "8", "low_freq_factor": 1.0, "high_freq_factor": 4.0});
    assert_bad_format(cfg_with("rope_scaling", Some(bad_factor)).unwrap_err(), file, "rope_scaling.factor");
    assert_bad_format(cfg_with("rope_scaling", Some(serde_json::json!(8))).unwrap_err(), file, "rope_scaling");
}

#[test]
fn bad_config_json_is_bad_format() {
    let file = Path::new("config.json");
    assert_bad_format(cfg("{\"hidden_size\": 2048,").unwrap_err(), file, "not JSON");
    assert_bad_format(cfg("").unwrap_err(), file, "not JSON");
    assert_bad_format(cfg("[1, 2]").unwrap_err(), file, "not a JSON object");
    // Through a file: the error names that file; a missing file is FileNotFound.
    let dir = TempDir::new("cfgfile");
    let p = dir.write("config.json", b"{nope");
    assert_bad_format(ModelConfig::from_json_file(&p).unwrap_err(), &p, "not JSON");
    let missing = dir.path("absent.json");
    assert_eq!(ModelConfig::from_json_file(&missing).unwrap_err(), Error::FileNotFound(missing.display().to_string()));
    let p = dir.write("good.json", TINYLLAMA_CONFIG.as_bytes());
    assert_eq!(ModelConfig::from_json_file(&p).unwrap().num_hidden_layers, 22);
}

#[test]
fn config_wrong_types_and_missing_keys_name_the_key() {
    let file = Path::new("config.json");
    use serde_json::json;
    let wrong: &[(&str, serde_json::Value)] = &[
        ("hidden_size", json!("2048")),
        ("num_hidden_layers", json!(-1)),
        ("num_attention_heads", json!(32.5)),
        ("num_key_value_heads", json!([4])),
        ("head_dim", json!(true)),
        ("intermediate_size", json!({})),
        ("rms_norm_eps", json!("1e-5")),
        ("rope_theta", json!(false)),
        ("vocab_size", json!(1e3)),
        ("max_position_embeddings", json!("long")),
        ("tie_word_embeddings", json!(0)),
        ("bos_token_id", json!(-1)),
        ("bos_token_id", json!(4294967296u64)),
    ];
    for (key, value) in wrong {
        let err = cfg_with(key, Some(value.clone())).unwrap_err();
        assert_bad_format(err, file, &format!("{key}: expected"));
    }
    for key in ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"] {
        assert_bad_format(cfg_with(key, None).unwrap_err(), file, &format!("{key}: missing"));
    }
    // head_dim cannot be derived when hidden is not a multiple of heads.
    let c = r#"{"hidden_size": 100, "num_hidden_layers": 1, "num_attention_heads": 3, "intermediate_size": 8, "vocab_size": 10}"#;
    assert_bad_format(cfg(c).unwrap_err(), file, "head_dim: missing");
    let c = r#"{"hidden_size": 100, "num_hidden_layers": 1, "num_attention_heads": 0, "intermediate_size": 8, "vocab_size": 10}"#;
    assert_bad_format(cfg(c).unwrap_err(), file, "num_attention_heads: must be > 0");
}

#[test]
fn validate_rejects_inconsistent_configs() {
    let base = cfg(TINYLLAMA_CONFIG).unwrap();
    let file = Path::new("config.json");
    let check = |f: &dyn Fn(&mut ModelConfig), needle: &str| {
        let mut c = base.clone();
        f(&mut c);
        assert_bad_format(c.validate().unwrap_err(), file, needle);
    };
    check(&|c| c.num_key_value_heads = 5, "num_key_value_heads: 5 does not divide num_attention_heads 32");
    check(&|c| c.num_key_value_heads = 0, "num_key_value_heads: must be > 0");
    check(&|c| c.num_hidden_layers = 0, "num_hidden_layers: must be > 0");
    check(&|c| c.vocab_size = 0, "vocab_size: must be > 0");
    check(&|c| c.intermediate_size = 0, "intermediate_size: must be > 0");
    check(&|c| c.head_dim = 63, "head_dim: 63 is odd");
    check(&|c| c.rms_norm_eps = 0.0, "rms_norm_eps");
    check(&|c| c.rope_theta = f32::NAN, "rope_theta");
    let llama3 = |factor, low, high, orig| RopeScaling::Llama3 {
        factor,
        low_freq_factor: low,
        high_freq_factor: high,
        original_max_position_embeddings: orig,
    };
    check(&|c| c.rope_scaling = llama3(0.0, 1.0, 4.0, 8192), "rope_scaling.factor");
    check(&|c| c.rope_scaling = llama3(8.0, 4.0, 4.0, 8192), "rope_scaling.high_freq_factor");
    check(&|c| c.rope_scaling = llama3(8.0, 1.0, 4.0, 0), "original_max_position_embeddings");
    let mut ok = base.clone();
    ok.rope_scaling = llama3(8.0, 1.0, 4.0, 8192);
    ok.validate().unwrap();
}

// ---------------------------------------------------------------- generation_config.json

#[test]
fn generation_config_eos_list_replaces_eos_ids() {
    let dir = TempDir::new("gencfg");
    let mut c = cfg(TINYLLAMA_CONFIG).unwrap();
    let p = dir.write("generation_config.json", br#"{"bos_token_id": 128000, "eos_token_id": [128001, 128009, 128001], "do_sample": true}"#);
    c.apply_generation_config(&p).unwrap();
    assert_eq!((c.bos_token_id, c.eos_token_ids.clone()), (Some(128000), vec![128001, 128009]));
    let p = dir.write("g2.json", br#"{"eos_token_id": 5}"#);
    c.apply_generation_config(&p).unwrap();
    assert_eq!((c.bos_token_id, c.eos_token_ids.clone()), (Some(128000), vec![5]));
    // Absent / null keys leave the ids alone.
    let p = dir.write("g3.json", br#"{"eos_token_id": null, "max_length": 20}"#);
    c.apply_generation_config(&p).unwrap();
    assert_eq!(c.eos_token_ids, vec![5]);
    // Bad inputs.
    let p = dir.write("g4.json", br#"{"eos_token_id": "</s>"}"#);
    assert_bad_format(c.apply_generation_config(&p).unwrap_err(), &p, "eos_token_id");
    let p = dir.write("g5.json", b"{");
    assert_bad_format(c.apply_generation_config(&p).unwrap_err(), &p, "not JSON");
    let missing = dir.path("g6.json");
    assert_eq!(c.apply_generation_config(&missing).unwrap_err(), Error::FileNotFound(missing.display().to_string()));
    assert_eq!(c.eos_token_ids, vec![5]); // failed applies change nothing
}

// ---------------------------------------------------------------- infer / for_checkpoint

/// A shape-only Llama checkpoint: vocab 10, hidden 96, 3 layers, q 128 (2 heads of 64),
/// kv 64 (1 head), intermediate 200; lm_head only when `untied`.
fn llama_tensors(untied: bool) -> Vec<T> {
    let mut t = vec![zeros("model.embed_tokens.weight", vec![10, 96]), zeros("model.norm.weight", vec![96])];
    for i in 0..3 {
        for (n, s) in [
            ("input_layernorm", vec![96]),
            ("self_attn.q_proj", vec![128, 96]),
            ("self_attn.k_proj", vec![64, 96]),
            ("self_attn.v_proj", vec![64, 96]),
            ("self_attn.o_proj", vec![96, 128]),
            ("post_attention_layernorm", vec![96]),
            ("mlp.gate_proj", vec![200, 96]),
            ("mlp.up_proj", vec![200, 96]),
            ("mlp.down_proj", vec![96, 200]),
        ] {
            t.push(zeros(&format!("model.layers.{i}.{n}.weight"), s));
        }
    }
    if untied {
        t.push(zeros("lm_head.weight", vec![10, 96]));
    }
    t
}

#[test]
fn infer_without_config_json() {
    let dir = TempDir::new("infer");
    dir.write("model.safetensors", &st_bytes(&llama_tensors(false)));
    let ck = Checkpoint::open(&dir.0).unwrap();
    let c = ModelConfig::infer(&ck).unwrap();
    let want = ModelConfig {
        hidden_size: 96,
        num_hidden_layers: 3,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: 64,
        intermediate_size: 200,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_scaling: RopeScaling::Default,
        vocab_size: 10,
        max_position_embeddings: 2048,
        tie_word_embeddings: true,
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
    };
    assert_eq!(c, want);
    assert_eq!(ModelConfig::for_checkpoint(&ck).unwrap(), want);

    // With lm_head.weight: untied. With a generation_config.json: its eos ids.
    let dir = TempDir::new("infer_untied");
    dir.write("model.safetensors", &st_bytes(&llama_tensors(true)));
    dir.write("generation_config.json", br#"{"eos_token_id": [2, 7]}"#);
    let ck = Checkpoint::open(&dir.0).unwrap();
    let c = ModelConfig::for_checkpoint(&ck).unwrap();
    assert!(!c.tie_word_embeddings);
    assert_eq!(c.eos_token_ids, vec![2, 7]);
}

#[test]
fn infer_failures() {
    let dir = TempDir::new("infer_bad");
    // No embedding: the missing tensor is named.
    let p = dir.write("model.safetensors", &st_bytes(&[zeros("model.norm.weight", vec![8])]));
    let ck = Checkpoint::open(&p).unwrap();
    assert_eq!(ModelConfig::infer(&ck).unwrap_err(), Error::MissingTensor("model.embed_tokens.weight".into()));
    // Embedding but no layers.
    let p = dir.write("model.safetensors", &st_bytes(&[zeros("model.embed_tokens.weight", vec![4, 8])]));
    let ck = Checkpoint::open(&p).unwrap();
    assert_bad_format(ModelConfig::infer(&ck).unwrap_err(), &dir.path("config.json"), "no model.layers.N tensors");
    // q_proj width not a multiple of 64.
    let p = dir.write(
        "model.safetensors",
        &st_bytes(&[
            zeros("model.embed_tokens.weight", vec![4, 8]),
            zeros("model.layers.0.self_attn.q_proj.weight", vec![96, 8]),
            zeros("model.layers.0.self_attn.k_proj.weight", vec![64, 8]),
            zeros("model.layers.0.mlp.gate_proj.weight", vec![16, 8]),
        ]),
    );
    let ck = Checkpoint::open(&p).unwrap();
    assert_bad_format(ModelConfig::infer(&ck).unwrap_err(), &dir.path("config.json"), "not multiples of head_dim 64");
    // 1-D embedding.
    let p = dir.write("model.safetensors", &st_bytes(&[zeros("model.embed_tokens.weight", vec![32])]));
    let ck = Checkpoint::open(&p).unwrap();
    assert_bad_format(ModelConfig::infer(&ck).unwrap_err(), &dir.path("config.json"), "expected 2-D");
}

/// TINYLLAMA_CONFIG with the dimensions of `llama_tensors` (3 layers, hidden 96, 2 heads of
/// 64, 1 kv head, intermediate 200, vocab 10).
fn llama_tensors_config() -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(TINYLLAMA_CONFIG).unwrap();
    for (k, x) in [("num_hidden_layers", 3), ("hidden_size", 96), ("num_attention_heads", 2), ("head_dim", 64),
                   ("num_key_value_heads", 1), ("intermediate_size", 200), ("vocab_size", 10)] {
        v[k] = serde_json::json!(x);
    }
    v
}

#[test]
fn for_checkpoint_reads_config_json_and_validates() {
    let dir = TempDir::new("for_ckpt");
    dir.write("model.safetensors", &st_bytes(&llama_tensors(false)));
    let mut v = llama_tensors_config();
    v["rope_theta"] = serde_json::json!(500000.0);
    dir.write("config.json", v.to_string().as_bytes());
    dir.write("generation_config.json", br#"{"bos_token_id": 1, "eos_token_id": [2, 32000]}"#);
    let ck = Checkpoint::open(&dir.path("model.safetensors")).unwrap();
    let c = ModelConfig::for_checkpoint(&ck).unwrap();
    assert_eq!((c.hidden_size, c.num_hidden_layers, c.num_key_value_heads), (96, 3, 1));
    assert_eq!((c.rope_theta, c.max_position_embeddings), (500000.0, 2048)); // config.json, not inferred
    assert_eq!(c.eos_token_ids, vec![2, 32000]);

    // An inconsistent config.json fails validation.
    v["num_key_value_heads"] = serde_json::json!(3);
    dir.write("config.json", v.to_string().as_bytes());
    assert_bad_format(ModelConfig::for_checkpoint(&ck).unwrap_err(), Path::new("config.json"), "num_key_value_heads");
    // A config.json whose dimensions are not the tensors' is refused with the tensor's shape.
    dir.write("config.json", TINYLLAMA_CONFIG.as_bytes());
    assert_eq!(
        ModelConfig::for_checkpoint(&ck).unwrap_err(),
        Error::ShapeMismatch { name: "model.embed_tokens.weight".into(), expected: vec![32000, 2048], got: vec![10, 96] }
    );
    // A broken generation_config.json is reported, not ignored.
    dir.write("config.json", llama_tensors_config().to_string().as_bytes());
    let g = dir.write("generation_config.json", b"[");
    assert_bad_format(ModelConfig::for_checkpoint(&ck).unwrap_err(), &g, "not JSON");
}

/// Dimensions no real model has, which would size terabytes: each is refused by the checks
/// against the tensors (whose byte sizes the file bounds) or by a cap, before anything is
/// allocated. An abort here would kill the test binary.
#[test]
fn absurd_config_dimensions_are_refused_before_allocation() {
    let dir = TempDir::new("absurd");
    dir.write("model.safetensors", &st_bytes(&llama_tensors(true)));
    let ck = Checkpoint::open(&dir.path("model.safetensors")).unwrap();
    let with = |key: &str, x: serde_json::Value| {
        let mut v = llama_tensors_config();
        v[key] = x;
        dir.write("config.json", v.to_string().as_bytes());
        ModelConfig::for_checkpoint(&ck)
    };
    let big = |e: u32| serde_json::json!(1u64 << e);
    let shape_err = |r: viva_core::Result<ModelConfig>, tensor: &str| match r {
        Err(Error::ShapeMismatch { name, .. }) => assert!(name.ends_with(tensor), "{name} is not {tensor}"),
        other => panic!("{tensor}: expected ShapeMismatch, got {other:?}"),
    };
    assert_eq!(with("num_hidden_layers", serde_json::json!(4)).unwrap_err(), Error::MissingTensor("model.layers.3.input_layernorm.weight".into()));
    assert_eq!(
        with("num_hidden_layers", big(50)).unwrap_err(),
        Error::MissingTensor("model.layers.3.input_layernorm.weight".into())
    );
    shape_err(with("hidden_size", big(40)), "embed_tokens.weight");
    shape_err(with("vocab_size", big(50)), "embed_tokens.weight");
    shape_err(with("intermediate_size", big(50)), "gate_proj.weight");
    shape_err(with("num_attention_heads", big(40)), "q_proj.weight");
    shape_err(with("head_dim", big(40)), "q_proj.weight");
    // a config whose q/kv widths overflow usize: BadFormat from validate
    assert_bad_format(with("head_dim", big(63)).unwrap_err(), Path::new("config.json"), "overflows");
    // no tensor bounds the context length (it sizes the KV cache): capped
    assert_bad_format(with("max_position_embeddings", big(50)).unwrap_err(), Path::new("config.json"), "max_position_embeddings");
    let mut v = llama_tensors_config();
    v["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 1u64 << 60});
    dir.write("config.json", v.to_string().as_bytes());
    assert_bad_format(ModelConfig::for_checkpoint(&ck).unwrap_err(), Path::new("config.json"), "original_max_position_embeddings");
    // a lm_head of the wrong shape is named too
    let mut t = llama_tensors(false);
    t.push(zeros("lm_head.weight", vec![10, 95]));
    dir.write("model.safetensors", &st_bytes(&t));
    dir.write("config.json", llama_tensors_config().to_string().as_bytes());
    let ck = Checkpoint::open(&dir.path("model.safetensors")).unwrap();
    shape_err(ModelConfig::for_checkpoint(&ck), "lm_head.weight");
}

/// A tensor entry's shape and offsets are checked against each other and the data section,
/// also when the shape's product overflows or exceeds the file by far.
#[test]
fn lying_entry_sizes_are_bad_format() {
    let path = Path::new("x.safetensors");
    let entry = |shape: &str, offsets: &str| {
        let header = format!(r#"{{"t": {{"dtype": "F32", "shape": {shape}, "data_offsets": {offsets}}}}}"#);
        Checkpoint::from_bytes(path, raw_file(header.as_bytes(), &[0u8; 16])).map(|c| c.len())
    };
    assert_eq!(entry("[2, 2]", "[0, 16]"), Ok(1));
    for (shape, offsets, needle) in [
        ("[4611686018427387904, 4]", "[0, 16]", "overflows"),
        ("[1073741824, 1073741824]", "[0, 16]", "needs"),
        ("[4]", "[0, 18446744073709551615]", "past the"),
        ("[4]", "[16, 0]", "reversed"),
        ("[-4]", "[0, 16]", "non-negative"),
    ] {
        assert_bad_format(entry(shape, offsets).unwrap_err(), path, needle);
    }
    // a header length past the file or the 100 MB cap, from bytes as from a file
    let mut huge = raw_file(b"{}", &[]);
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_bad_format(Checkpoint::from_bytes(path, huge).unwrap_err(), path, "exceeds");
    assert_bad_format(Checkpoint::from_bytes(path, vec![1, 2, 3]).unwrap_err(), path, "shorter than");
}

// ---------------------------------------------------------------- hostile bytes never panic

#[test]
fn every_truncation_and_random_corruption_is_ok_or_bad_format() {
    let dir = TempDir::new("fuzz");
    let good = st_bytes(&[f32_t("a", vec![2, 2], &[1.0, 2.0, 3.0, 4.0]), bf16_t("b", vec![3], &[1.0, 2.0, 3.0])]);
    let check = |bytes: &[u8], what: &str| {
        let p = dir.write("f.safetensors", bytes);
        match Checkpoint::open(&p) {
            Ok(ck) => {
                // Whatever survives must be readable in full without going out of bounds.
                for n in ck.names() {
                    if let Ok(t) = ck.get(n) {
                        assert_eq!(t.to_f32_vec().len(), t.numel());
                    }
                }
            }
            Err(Error::BadFormat { .. }) => {}
            Err(e) => panic!("{what}: unexpected {e:?}"),
        }
    };
    for len in 0..good.len() {
        let p = dir.write("f.safetensors", &good[..len]);
        assert!(matches!(Checkpoint::open(&p), Err(Error::BadFormat { .. })), "truncated to {len} must fail");
    }
    // Deterministic xorshift: flip 1–3 bytes anywhere in the file, 400 times.
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for i in 0..400 {
        let mut bytes = good.clone();
        for _ in 0..(1 + next() % 3) {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = next() as u8;
        }
        check(&bytes, &format!("mutation {i}"));
    }
}

/// JSON files far larger than any real one (their parsed trees are several times their size)
/// are refused by size before they are read: sparse files, so nothing is written.
#[test]
fn oversized_json_files_are_refused_unread() {
    let dir = TempDir::new("oversized");
    let sparse = |name: &str, len: u64| {
        let p = dir.path(name);
        std::fs::File::create(&p).unwrap().set_len(len).unwrap();
        p
    };
    let cfg = sparse("config.json", viva_core::alloc::MAX_SMALL_JSON + 1);
    assert_bad_format(ModelConfig::from_json_file(&cfg).unwrap_err(), &cfg, "more than");
    let index = sparse("model.safetensors.index.json", viva_core::alloc::MAX_SMALL_JSON + 1);
    assert_bad_format(open_err(&index), &index, "more than");
    let tok = sparse("tokenizer.json", viva_core::alloc::MAX_TOKENIZER_JSON + 1);
    assert_bad_format(viva_core::tokenizer::Tokenizer::from_file(&tok).err().unwrap(), &tok, "more than");
    let tc = sparse("tokenizer_config.json", viva_core::alloc::MAX_SMALL_JSON + 1);
    assert_bad_format(viva_core::chat::ChatTemplate::from_tokenizer_config(&tc).unwrap_err(), &tc, "more than");
}
