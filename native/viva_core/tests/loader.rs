//! Checkpoint (safetensors) and ModelConfig loading: good inputs read back exactly, and
//! every bad input gives its exact `Error` variant. Files are written into a fresh temp
//! folder per test.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use half::{bf16, f16};
use viva_core::config::{ModelConfig, RopeScaling};
use viva_core::safetensors::Checkpoint;
use viva_core::tensor::DType;
use viva_core::Error;

// ---------------------------------------------------------------- helpers

/// A temp folder removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("viva_loader_{}_{tag}_{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tensor to serialise: name, safetensors dtype string, shape, raw little-endian bytes.
struct T {
    name: String,
    dtype: &'static str,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn f32_t(name: &str, shape: Vec<usize>, vals: &[f32]) -> T {
    T { name: name.into(), dtype: "F32", shape, data: vals.iter().flat_map(|v| v.to_le_bytes()).collect() }
}
fn f16_t(name: &str, shape: Vec<usize>, vals: &[f32]) -> T {
    T { name: name.into(), dtype: "F16", shape, data: vals.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect() }
}
fn bf16_t(name: &str, shape: Vec<usize>, vals: &[f32]) -> T {
    T { name: name.into(), dtype: "BF16", shape, data: vals.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect() }
}
/// A zero-filled F32 tensor of `shape` (for shape-only checkpoints).
fn zeros(name: &str, shape: Vec<usize>) -> T {
    let n: usize = shape.iter().product();
    T { name: name.into(), dtype: "F32", shape, data: vec![0u8; n * 4] }
}

/// A valid safetensors file (with a `__metadata__` entry, as HF writes).
fn st_bytes(tensors: &[T]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut data = Vec::new();
    for t in tensors {
        let begin = data.len();
        data.extend_from_slice(&t.data);
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [begin, data.len()]}),
        );
    }
    raw_file(serde_json::Value::Object(header).to_string().as_bytes(), &data)
}

/// 8-byte length + header bytes + data, with no validation (for corrupt files).
fn raw_file(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out
}

/// Asserts `err` is BadFormat for `file` with a detail containing `needle`.
#[track_caller]
fn assert_bad_format(err: Error, file: &Path, needle: &str) {
    match &err {
        Error::BadFormat { file: f, detail } => {
            assert_eq!(f, &file.display().to_string(), "wrong file in {err:?}");
            assert!(detail.contains(needle), "detail {detail:?} lacks {needle:?}");
        }
        other => panic!("expected BadFormat containing {needle:?}, got {other:?}"),
    }
}

fn open_err(path: &Path) -> Error {
    Checkpoint::open(path).unwrap_err()
}

/// Writes `header` (a JSON string) + `data` and returns the open error.
fn header_err(dir: &TempDir, header: &str, data: &[u8]) -> (Error, PathBuf) {
    let p = dir.write("bad.safetensors", &raw_file(header.as_bytes(), data));
    (open_err(&p), p)
}

// ---------------------------------------------------------------- safetensors: good inputs

#[test]
fn single_file_reads_each_dtype_exactly() {
    let dir = TempDir::new("dtypes");
    // Values exactly representable in each dtype, so the read-back is exact.
    let v32 = [1.5f32, -2.25, 3.0e-3, 65504.0, -0.0, 7.0];
    let v16 = [0.5f32, -1.0, 2.0, 0.099975586, 1024.0, -3.5];
    let vb16 = [1.0f32, -0.5, 3.140625, 1.0e10_f32, -2.0, 0.0];
    let p = dir.write(
        "model.safetensors",
        &st_bytes(&[f32_t("a", vec![2, 3], &v32), f16_t("b", vec![3, 2], &v16), bf16_t("c", vec![6], &vb16)]),
    );
    let bf_exact: Vec<f32> = vb16.iter().map(|v| bf16::from_f32(*v).to_f32()).collect();
    assert_eq!(bf_exact[3], bf16::from_f32(1.0e10).to_f32()); // the stored (rounded) value

    let ck = Checkpoint::open(&p).unwrap();
    assert_eq!(ck.dir, dir.0);
    assert_eq!(ck.files, vec![p.clone()]);
    assert_eq!(ck.names(), vec!["a", "b", "c"]); // __metadata__ is not a tensor
    assert_eq!(ck.len(), 3);
    assert!(!ck.contains("__metadata__"));

    let a = ck.get("a").unwrap();
    assert_eq!((a.dtype, a.shape.clone()), (DType::F32, vec![2, 3]));
    assert_eq!(a.to_f32_vec(), v32.to_vec());
    assert_eq!(a.get_f32(3), 65504.0);
    let b = ck.get_shaped("b", &[3, 2]).unwrap();
    assert_eq!(b.dtype, DType::F16);
    assert_eq!(b.to_f32_vec(), v16.to_vec());
    let c = ck.get("c").unwrap();
    assert_eq!(c.dtype, DType::BF16);
    assert_eq!(c.to_f32_vec(), bf_exact);
    let mut part = [0f32; 2];
    c.read_f32_into(1, &mut part);
    assert_eq!(part, [-0.5, 3.140625]);
}

#[test]
fn views_are_zero_copy_into_one_map() {
    let dir = TempDir::new("zerocopy");
    let p = dir.write("m.safetensors", &st_bytes(&[f32_t("x", vec![4], &[1.0; 4]), f32_t("y", vec![2], &[2.0; 2])]));
    let ck = Checkpoint::open(&p).unwrap();
    // The model shares a Checkpoint across threads (Llm is Send + Sync).
    fn send_sync<S: Send + Sync>(_: &S) {}
    send_sync(&ck);
    let (x, y) = (ck.get("x").unwrap(), ck.get("y").unwrap());
    // y's bytes start right after x's in the same mapping: no per-tensor copies.
    assert_eq!(y.bytes().as_ptr() as usize - x.bytes().as_ptr() as usize, 16);
    let file = std::fs::read(&p).unwrap();
    assert_eq!(x.bytes(), &file[file.len() - 24..file.len() - 8]);
}

#[test]
fn scalar_and_empty_tensors() {
    let dir = TempDir::new("scalar");
    let p = dir.write("m.safetensors", &st_bytes(&[f32_t("s", vec![], &[4.0]), f32_t("e", vec![0, 5], &[])]));
    let ck = Checkpoint::open(&p).unwrap();
    assert_eq!(ck.get("s").unwrap().to_f32_vec(), vec![4.0]);
    assert_eq!(ck.get("e").unwrap().numel(), 0);
}

fn write_sharded(dir: &TempDir) -> PathBuf {
    dir.write("model-00001-of-00002.safetensors", &st_bytes(&[f32_t("w1", vec![2], &[1.0, 2.0]), f32_t("w2", vec![1], &[3.0])]));
    dir.write("model-00002-of-00002.safetensors", &st_bytes(&[bf16_t("w3", vec![2, 1], &[4.0, 5.0])]));
    let index = serde_json::json!({
        "metadata": {"total_size": 16},
        "weight_map": {"w1": "model-00001-of-00002.safetensors", "w2": "model-00001-of-00002.safetensors",
                       "w3": "model-00002-of-00002.safetensors"}
    });
    dir.write("model.safetensors.index.json", index.to_string().as_bytes())
}

#[test]
fn sharded_index_by_file_and_by_folder() {
    let dir = TempDir::new("sharded");
    let index = write_sharded(&dir);
    // A stray file the index does not name must not be loaded.
    dir.write("stray.safetensors", &st_bytes(&[f32_t("stray", vec![1], &[0.0])]));
    for ck in [Checkpoint::open(&index).unwrap(), Checkpoint::open(&dir.0).unwrap()] {
        assert_eq!(ck.dir, dir.0);
        assert_eq!(
            ck.files,
            vec![dir.path("model-00001-of-00002.safetensors"), dir.path("model-00002-of-00002.safetensors")]
        );
        assert_eq!(ck.names(), vec!["w1", "w2", "w3"]);
        assert_eq!(ck.get("w1").unwrap().to_f32_vec(), vec![1.0, 2.0]);
        assert_eq!(ck.get("w2").unwrap().to_f32_vec(), vec![3.0]);
        assert_eq!(ck.get_shaped("w3", &[2, 1]).unwrap().to_f32_vec(), vec![4.0, 5.0]);
        assert!(!ck.contains("stray"));
    }
}

#[test]
fn folder_prefers_model_safetensors_over_other_files() {
    let dir = TempDir::new("prefer_single");
    dir.write("model.safetensors", &st_bytes(&[f32_t("main", vec![1], &[1.0])]));
    dir.write("other.safetensors", &st_bytes(&[f32_t("other", vec![1], &[2.0])]));
    let ck = Checkpoint::open(&dir.0).unwrap();
    assert_eq!(ck.files, vec![dir.path("model.safetensors")]);
    assert_eq!(ck.names(), vec!["main"]);
}

#[test]
fn folder_with_unindexed_files_loads_them_all() {
    let dir = TempDir::new("unindexed");
    dir.write("b.safetensors", &st_bytes(&[f32_t("tb", vec![1], &[2.0])]));
    dir.write("a.safetensors", &st_bytes(&[f32_t("ta", vec![1], &[1.0])]));
    dir.write("notes.txt", b"not a checkpoint");
    let ck = Checkpoint::open(&dir.0).unwrap();
    assert_eq!(ck.files, vec![dir.path("a.safetensors"), dir.path("b.safetensors")]);
    assert_eq!(ck.names(), vec!["ta", "tb"]);
    // A single oddly named file in a folder works too.
    let one = TempDir::new("one_file");
    one.write("weights.safetensors", &st_bytes(&[f32_t("w", vec![1], &[1.0])]));
    assert_eq!(Checkpoint::open(&one.0).unwrap().names(), vec!["w"]);
}

#[test]
fn duplicate_names_across_unindexed_files_are_bad_format() {
    let dir = TempDir::new("dupes");
    dir.write("a.safetensors", &st_bytes(&[f32_t("w", vec![1], &[1.0])]));
    let b = dir.write("b.safetensors", &st_bytes(&[f32_t("w", vec![1], &[2.0])]));
    assert_bad_format(open_err(&dir.0), &b, "\"w\" is also in another file");
}

// ---------------------------------------------------------------- safetensors: bad inputs

#[test]
fn missing_file_and_empty_folder_are_file_not_found() {
    let dir = TempDir::new("missing");
    let p = dir.path("nope.safetensors");
    assert_eq!(open_err(&p), Error::FileNotFound(p.display().to_string()));
    let sub = dir.path("empty");
    std::fs::create_dir(&sub).unwrap();
    assert_eq!(open_err(&sub), Error::FileNotFound(sub.join("model.safetensors").display().to_string()));
}

#[test]
fn truncated_files_are_bad_format() {
    let dir = TempDir::new("truncated");
    for n in [0usize, 1, 7] {
        let p = dir.write("short.safetensors", &vec![0u8; n]);
        assert_bad_format(open_err(&p), &p, "shorter than the 8-byte header length");
    }
    let good = st_bytes(&[f32_t("w", vec![4], &[1.0, 2.0, 3.0, 4.0])]);
    // Cut inside the header: the declared header length runs past EOF.
    let p = dir.write("cut_header.safetensors", &good[..20]);
    assert_bad_format(open_err(&p), &p, "runs past the end");
    // Cut inside the data: the tensor's offsets run past the data section.
    let p = dir.write("cut_data.safetensors", &good[..good.len() - 1]);
    assert_bad_format(open_err(&p), &p, "past the 15-byte data section");
}

#[test]
fn absurd_header_length_is_bad_format() {
    let dir = TempDir::new("absurd");
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let p = dir.write("huge.safetensors", &bytes);
    assert_bad_format(open_err(&p), &p, "exceeds");
    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let p = dir.write("long.safetensors", &bytes);
    assert_bad_format(open_err(&p), &p, "runs past the end of the 10-byte file");
}

#[test]
fn corrupt_headers_are_bad_format() {
    let dir = TempDir::new("corrupt");
    let p = dir.write("nonutf8.safetensors", &raw_file(&[b'{', 0xff, 0xfe, b'}'], &[]));
    assert_bad_format(open_err(&p), &p, "not UTF-8");

    let cases: &[(&str, &[u8], &str)] = &[
        ("{\"w\": {\"dtype\": \"F32\"", &[], "not JSON"),
        ("", &[], "not JSON"),
        ("[1, 2, 3]", &[], "not a JSON object"),
        ("{\"w\": 5}", &[], "entry \"w\" is not an object"),
        ("{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", &[0; 4], "missing dtype"),
        ("{\"w\": {\"dtype\": 32, \"shape\": [1], \"data_offsets\": [0, 4]}}", &[0; 4], "dtype is not a string"),
        ("{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", &[0; 4], "missing shape"),
        ("{\"w\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", &[0; 4], "non-negative integers"),
        ("{\"w\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", &[0; 4], "non-negative integers"),
        ("{\"w\": {\"dtype\": \"F32\", \"shape\": [1]}}", &[0; 4], "missing data_offsets"),
        ("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", &[0; 4], "[begin, end] pair"),
        ("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}", &[0; 4], "reversed"),
        ("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 8]}}", &[0; 4], "past the 4-byte data section"),
        ("{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}", &[0; 4], "needs 8 bytes, data_offsets span 4"),
        ("{\"w\": {\"dtype\": \"BF16\", \"shape\": [1], \"data_offsets\": [0, 4]}}", &[0; 4], "needs 2 bytes"),
        // numel × size overflows usize: must be caught, not wrap to a small length.
        (
            "{\"w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 0]}}",
            &[],
            "overflows",
        ),
        ("{\"w\": {\"dtype\": \"F32\", \"shape\": [4611686018427387904], \"data_offsets\": [0, 0]}}", &[], "overflows"),
        // A length-checked unsupported dtype is still checked.
        ("{\"w\": {\"dtype\": \"I64\", \"shape\": [1], \"data_offsets\": [0, 4]}}", &[0; 4], "needs 8 bytes"),
    ];
    for (header, data, needle) in cases {
        let (err, p) = header_err(&dir, header, data);
        assert_bad_format(err, &p, needle);
    }
}

#[test]
fn header_padding_and_metadata_are_accepted() {
    // The format allows trailing spaces in the header (8-byte alignment).
    let dir = TempDir::new("padding");
    let header = "{\"__metadata__\": {\"k\": \"v\"}, \"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}     ";
    let p = dir.write("m.safetensors", &raw_file(header.as_bytes(), &2.5f32.to_le_bytes()));
    let ck = Checkpoint::open(&p).unwrap();
    assert_eq!(ck.names(), vec!["w"]);
    assert_eq!(ck.get("w").unwrap().to_f32_vec(), vec![2.5]);
}

#[test]
fn missing_tensor_and_wrong_shape() {
    let dir = TempDir::new("lookup");
    let p = dir.write("m.safetensors", &st_bytes(&[f32_t("w", vec![2, 3], &[0.0; 6])]));
    let ck = Checkpoint::open(&p).unwrap();
    assert_eq!(ck.get("model.norm.weight").unwrap_err(), Error::MissingTensor("model.norm.weight".into()));
    assert_eq!(ck.get_shaped("absent", &[1]).unwrap_err(), Error::MissingTensor("absent".into()));
    assert!(!ck.contains("absent"));
    assert_eq!(
        ck.get_shaped("w", &[3, 2]).unwrap_err(),
        Error::ShapeMismatch { name: "w".into(), expected: vec![3, 2], got: vec![2, 3] }
    );
    assert_eq!(
        ck.get_shaped("w", &[6]).unwrap_err(),
        Error::ShapeMismatch { name: "w".into(), expected: vec![6], got: vec![2, 3] }
    );
}

#[test]
fn unknown_dtype_is_kept_but_unsupported() {
    let dir = TempDir::new("dtype");
    let p = dir.write(
        "m.safetensors",
        &st_bytes(&[
            T { name: "ids".into(), dtype: "I64", shape: vec![2], data: vec![0; 16] },
            T { name: "fp8".into(), dtype: "F8_E4M3", shape: vec![3], data: vec![0; 3] },
            T { name: "odd".into(), dtype: "Q4_WEIRD", shape: vec![5], data: vec![0; 7] },
            f32_t("ok", vec![1], &[1.0]),
        ]),
    );
    let ck = Checkpoint::open(&p).unwrap();
    assert_eq!(ck.names(), vec!["fp8", "ids", "odd", "ok"]);
    assert!(ck.contains("ids"));
    for (name, dtype) in [("ids", "I64"), ("fp8", "F8_E4M3"), ("odd", "Q4_WEIRD")] {
        let want = Error::UnsupportedDtype { name: name.into(), dtype: dtype.into() };
        assert_eq!(ck.get(name).unwrap_err(), want);
        assert_eq!(ck.get_shaped(name, &[1]).unwrap_err(), want);
    }
    assert_eq!(ck.get("ok").unwrap().to_f32_vec(), vec![1.0]);
}

#[test]
fn bad_index_json_is_bad_format() {
    let dir = TempDir::new("bad_index");
    dir.write("s1.safetensors", &st_bytes(&[f32_t("w", vec![1], &[1.0])]));
    let cases: &[(&str, &str)] = &[
        ("{\"weight_map\": {\"w\": ", "index is not JSON"),
        ("[]", "no \"weight_map\" object"),
        ("{\"metadata\": {}}", "no \"weight_map\" object"),
        ("{\"weight_map\": [\"s1.safetensors\"]}", "no \"weight_map\" object"),
        ("{\"weight_map\": {}}", "weight_map is empty"),
        ("{\"weight_map\": {\"w\": 1}}", "weight_map[\"w\"] is not a string"),
        ("{\"weight_map\": {\"w\": \"../s1.safetensors\"}}", "leaves the checkpoint folder"),
        ("{\"weight_map\": {\"w\": \"/etc/passwd\"}}", "leaves the checkpoint folder"),
        ("{\"weight_map\": {\"w\": \"s1.safetensors\", \"v\": \"s1.safetensors\"}}", "lists \"v\""),
    ];
    for (text, needle) in cases {
        let p = dir.write("model.safetensors.index.json", text.as_bytes());
        assert_bad_format(open_err(&p), &p, needle);
        // Through the folder the same error comes back.
        assert_bad_format(open_err(&dir.0), &p, needle);
    }
    // Index naming a tensor in the wrong shard.
    dir.write("s2.safetensors", &st_bytes(&[f32_t("v", vec![1], &[1.0])]));
    let p = dir.write("model.safetensors.index.json", br#"{"weight_map": {"w": "s2.safetensors", "v": "s1.safetensors"}}"#);
    assert_bad_format(open_err(&p), &p, "but it is in");
    let p = dir.write("model.safetensors.index.json", &[b'{', 0xff, b'}']);
    assert_bad_format(open_err(&p), &p, "not UTF-8");
}

#[test]
fn missing_shard_is_file_not_found() {
    let dir = TempDir::new("missing_shard");
    let index = write_sharded(&dir);
    let shard = dir.path("model-00002-of-00002.safetensors");
    std::fs::remove_file(&shard).unwrap();
    assert_eq!(open_err(&index), Error::FileNotFound(shard.display().to_string()));
    assert_eq!(open_err(&dir.0), Error::FileNotFound(shard.display().to_string()));
}

#[test]
fn corrupt_shard_is_bad_format_for_that_shard() {
    let dir = TempDir::new("corrupt_shard");
    let index = write_sharded(&dir);
    let shard = dir.write("model-00002-of-00002.safetensors", b"\x05\0\0\0\0\0\0\0{oops");
    assert_bad_format(open_err(&index), &shard, "not JSON");
}

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
