//! Helpers shared by the loader tests (safetensors in loader.rs, config.json in config.rs):
//! temp folders, safetensors files written from tensors, and error checks.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use half::{bf16, f16};
use viva_core::safetensors::Checkpoint;
use viva_core::Error;

/// A temp folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("viva_loader_{}_{tag}_{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
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
pub struct T {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

pub fn f32_t(name: &str, shape: Vec<usize>, vals: &[f32]) -> T {
    T { name: name.into(), dtype: "F32", shape, data: vals.iter().flat_map(|v| v.to_le_bytes()).collect() }
}
pub fn f16_t(name: &str, shape: Vec<usize>, vals: &[f32]) -> T {
    T { name: name.into(), dtype: "F16", shape, data: vals.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect() }
}
pub fn bf16_t(name: &str, shape: Vec<usize>, vals: &[f32]) -> T {
    T { name: name.into(), dtype: "BF16", shape, data: vals.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect() }
}
/// A zero-filled F32 tensor of `shape` (for shape-only checkpoints).
pub fn zeros(name: &str, shape: Vec<usize>) -> T {
    let n: usize = shape.iter().product();
    T { name: name.into(), dtype: "F32", shape, data: vec![0u8; n * 4] }
}

/// A valid safetensors file (with a `__metadata__` entry, as HF writes).
pub fn st_bytes(tensors: &[T]) -> Vec<u8> {
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
pub fn raw_file(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out
}

/// Asserts `err` is BadFormat for `file` with a detail containing `needle`.
#[track_caller]
pub fn assert_bad_format(err: Error, file: &Path, needle: &str) {
    match &err {
        Error::BadFormat { file: f, detail } => {
            assert_eq!(f, &file.display().to_string(), "wrong file in {err:?}");
            assert!(detail.contains(needle), "detail {detail:?} lacks {needle:?}");
        }
        other => panic!("expected BadFormat containing {needle:?}, got {other:?}"),
    }
}

pub fn open_err(path: &Path) -> Error {
    Checkpoint::open(path).unwrap_err()
}

/// Writes `header` (a JSON string) + `data` and returns the open error.
pub fn header_err(dir: &TempDir, header: &str, data: &[u8]) -> (Error, PathBuf) {
    let p = dir.write("bad.safetensors", &raw_file(header.as_bytes(), data));
    (open_err(&p), p)
}

