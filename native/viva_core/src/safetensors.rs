//! Safetensors checkpoints: one file, a sharded set named by `model.safetensors.index.json`,
//! or a folder holding either. Every file is memory-mapped once; tensors are zero-copy
//! `TensorView`s into the map. Headers are validated in full, so hostile bytes give
//! `Error::BadFormat`, never a panic or an out-of-bounds view.
//!
//! File layout (https://github.com/huggingface/safetensors): 8 bytes little-endian u64 `n`,
//! `n` bytes of UTF-8 JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {..}}`,
//! then the data section; offsets are relative to the start of the data section.
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::tensor::{DType, Storage, TensorView};

/// The index file HF writes beside sharded checkpoints.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The file name HF writes for unsharded checkpoints.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The safetensors reference implementation refuses headers above 100 MB; so do we, so a
/// corrupt length cannot make us allocate or parse gigabytes.
const MAX_HEADER_LEN: u64 = 100_000_000;

/// One header entry. Tensors of dtypes the engine cannot read are kept (so `contains` and
/// `names` tell the truth) but `get` reports them as unsupported.
enum Entry {
    Tensor(TensorView),
    Unsupported { dtype: String },
    /// Made on each `get` (a block-quantized GGUF tensor dequantized to f32): the model
    /// builder holds one layer's f32 at a time instead of the whole checkpoint's.
    Lazy { shape: Vec<usize>, make: MakeTensor },
}

/// Makes a tensor on demand (see [`Checkpoint::add_lazy`]).
pub type MakeTensor = Box<dyn Fn() -> Result<TensorView> + Send + Sync>;

/// An opened checkpoint: all tensors of all its files, by HF name.
pub struct Checkpoint {
    /// The folder the checkpoint lives in (config.json, tokenizer.json are looked up here).
    pub dir: PathBuf,
    /// The safetensors files that were mapped, in load order.
    pub files: Vec<PathBuf>,
    tensors: HashMap<String, Entry>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Checkpoint({}, {} files, {} tensors)", self.dir.display(), self.files.len(), self.tensors.len())
    }
}

impl Checkpoint {
    /// A checkpoint made from tensors already in memory under their HF names (a converted
    /// GGUF file, tests).
    pub fn from_tensors(dir: PathBuf, files: Vec<PathBuf>, tensors: Vec<TensorView>) -> Self {
        let tensors = tensors.into_iter().map(|t| (t.name.clone(), Entry::Tensor(t))).collect();
        Checkpoint { dir, files, tensors }
    }

    /// Adds a tensor made by `make` on every `get` (nothing is kept): for tensors that must be
    /// converted (dequantized) and would otherwise all sit in memory until the model is built.
    /// `shape` is what `make` returns (checked against the config before anything is made).
    pub fn add_lazy(&mut self, name: String, shape: Vec<usize>, make: MakeTensor) {
        self.tensors.insert(name, Entry::Lazy { shape, make });
    }

    /// Opens a `.safetensors` file, a `model.safetensors.index.json`, or a folder holding
    /// either. In a folder the index wins, then `model.safetensors`, then the other
    /// `*.safetensors` files (all of them; a name in two files is `BadFormat`).
    pub fn open(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Self::open_dir(path);
        }
        let dir = parent_dir(path);
        if path.extension().is_some_and(|e| e == "json") {
            Self::open_index(path, dir)
        } else {
            let mut ckpt = Checkpoint { dir, files: Vec::new(), tensors: HashMap::new() };
            ckpt.add_file(path)?;
            Ok(ckpt)
        }
    }

    fn open_dir(dir: &Path) -> Result<Self> {
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            return Self::open_index(&index, dir.to_path_buf());
        }
        let single = dir.join(SINGLE_FILE);
        let files = if single.is_file() { vec![single] } else { list_safetensors(dir)? };
        if files.is_empty() {
            // Name the file a user would expect to find there.
            return Err(Error::FileNotFound(dir.join(SINGLE_FILE).display().to_string()));
        }
        let mut ckpt = Checkpoint { dir: dir.to_path_buf(), files: Vec::new(), tensors: HashMap::new() };
        for f in &files {
            ckpt.add_file(f)?;
        }
        Ok(ckpt)
    }

    /// `{"metadata": {..}, "weight_map": {tensor name: shard file name}}`; shard names are
    /// relative to the index's folder. Each shard is mapped once, and every name the index
    /// lists must be in the shard it names.
    fn open_index(index: &Path, dir: PathBuf) -> Result<Self> {
        let text = std::fs::read_to_string(index).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => Error::bad_format(index, "index is not UTF-8"),
            _ => Error::io(index, e),
        })?;
        let (wanted, shards) = parse_index(&text, index)?;
        let mut ckpt = Checkpoint { dir: dir.clone(), files: Vec::new(), tensors: HashMap::new() };
        let mut owner: HashMap<String, usize> = HashMap::new(); // tensor name → index into `shards`
        for (i, shard) in shards.iter().enumerate() {
            let path = dir.join(shard);
            for name in ckpt.add_file(&path)? {
                owner.insert(name, i);
            }
        }
        for (name, shard) in &wanted {
            match owner.get(name) {
                Some(&i) if shards[i] == *shard => {}
                Some(&i) => {
                    return Err(Error::bad_format(
                        index,
                        format!("index puts {name:?} in {shard:?} but it is in {:?}", shards[i]),
                    ))
                }
                None => return Err(Error::bad_format(index, format!("index lists {name:?} but {shard:?} lacks it"))),
            }
        }
        Ok(ckpt)
    }

    /// A checkpoint of one safetensors file already in memory; `path` names it in errors.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let mut ckpt = Checkpoint { dir: parent_dir(path), files: Vec::new(), tensors: HashMap::new() };
        ckpt.add_storage(path, Arc::new(Storage::Heap(bytes)))?;
        Ok(ckpt)
    }

    /// Maps one file and adds its tensors; returns their names.
    fn add_file(&mut self, path: &Path) -> Result<Vec<String>> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and lives as long as every view into it (Arc).
        // Like every mmap-based loader we assume the file is not truncated while mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        self.add_storage(path, Arc::new(Storage::Mmap(map)))
    }

    /// Adds the tensors of one file's bytes; returns their names.
    fn add_storage(&mut self, path: &Path, storage: Arc<Storage>) -> Result<Vec<String>> {
        let len = storage.bytes().len();
        if len < 8 {
            return Err(Error::bad_format(path, format!("file is {len} bytes, shorter than the 8-byte header length")));
        }
        let entries = parse(path, storage)?;
        let mut names = Vec::with_capacity(entries.len());
        for (name, entry) in entries {
            if self.tensors.contains_key(&name) {
                return Err(Error::bad_format(path, format!("tensor {name:?} is also in another file")));
            }
            names.push(name.clone());
            self.tensors.insert(name, entry);
        }
        self.files.push(path.to_path_buf());
        Ok(names)
    }

    /// The tensor called `name` (HF name) → `MissingTensor`, or `UnsupportedDtype` when it
    /// is stored in a dtype other than F32/F16/BF16.
    pub fn get(&self, name: &str) -> Result<TensorView> {
        match self.tensors.get(name) {
            Some(Entry::Tensor(t)) => Ok(t.clone()),
            Some(Entry::Lazy { make, .. }) => make(),
            Some(Entry::Unsupported { dtype }) => {
                Err(Error::UnsupportedDtype { name: name.to_string(), dtype: dtype.clone() })
            }
            None => Err(Error::MissingTensor(name.to_string())),
        }
    }

    /// Like `get`, and the shape must be exactly `shape`.
    pub fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<TensorView> {
        let t = self.get(name)?;
        if t.shape != shape {
            return Err(Error::ShapeMismatch { name: name.to_string(), expected: shape.to_vec(), got: t.shape.clone() });
        }
        Ok(t)
    }

    /// The shape of tensor `name` without reading (or making) it; None when absent or of an
    /// unsupported dtype.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        match self.tensors.get(name)? {
            Entry::Tensor(t) => Some(&t.shape),
            Entry::Lazy { shape, .. } => Some(shape),
            Entry::Unsupported { .. } => None,
        }
    }

    /// True for every tensor in the headers, readable or not.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

/// `model.safetensors.index.json`'s text → (tensor name, shard) pairs and the shards in
/// first-seen order (a deterministic load order). Shard names must stay below the folder.
pub fn parse_index(text: &str, index: &Path) -> Result<(Vec<(String, String)>, Vec<String>)> {
    let json: Value =
        serde_json::from_str(text).map_err(|e| Error::bad_format(index, format!("index is not JSON: {e}")))?;
    let weight_map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::bad_format(index, "index has no \"weight_map\" object"))?;
    let mut wanted = Vec::with_capacity(weight_map.len());
    let mut shards = Vec::new();
    let mut seen = BTreeSet::new();
    for (name, shard) in weight_map {
        let shard =
            shard.as_str().ok_or_else(|| Error::bad_format(index, format!("weight_map[{name:?}] is not a string")))?;
        if !is_plain_relative(shard) {
            return Err(Error::bad_format(index, format!("shard path {shard:?} leaves the checkpoint folder")));
        }
        if seen.insert(shard) {
            shards.push(shard.to_string());
        }
        wanted.push((name.clone(), shard.to_string()));
    }
    if shards.is_empty() {
        return Err(Error::bad_format(index, "weight_map is empty"));
    }
    Ok((wanted, shards))
}

/// The folder of a file path ("." for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Only plain names below the folder (no absolute paths, no `..`).
fn is_plain_relative(p: &str) -> bool {
    !p.is_empty() && Path::new(p).components().all(|c| matches!(c, Component::Normal(_)))
}

/// The `*.safetensors` files directly in `dir`, sorted by name.
fn list_safetensors(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = entry.map_err(|e| Error::io(dir, e))?.path();
        if p.extension().is_some_and(|e| e == "safetensors") && p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Bytes per element of every dtype the format defines, so entries of dtypes we do not
/// compute with are still length-checked. `None`: a name the format does not define.
fn format_dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" | "C64" => 8,
        _ => return None,
    })
}

/// Parses and validates the header of one mapped file.
fn parse(path: &Path, storage: Arc<Storage>) -> Result<Vec<(String, Entry)>> {
    let bad = |detail: String| Error::bad_format(path, detail);
    let bytes = storage.bytes();
    let file_len = bytes.len() as u64;
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&bytes[..8]); // add_file checked len >= 8
    let header_len = u64::from_le_bytes(len8);
    if header_len > MAX_HEADER_LEN {
        return Err(bad(format!("header length {header_len} exceeds the {MAX_HEADER_LEN}-byte limit")));
    }
    if header_len > file_len - 8 {
        return Err(bad(format!("header length {header_len} runs past the end of the {file_len}-byte file")));
    }
    let data_start = 8 + header_len as usize; // ≤ file_len, so it fits usize
    let data_len = bytes.len() - data_start;
    let header =
        std::str::from_utf8(&bytes[8..data_start]).map_err(|e| bad(format!("header is not UTF-8: {e}")))?;
    let json: Value = serde_json::from_str(header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let obj = json.as_object().ok_or_else(|| bad("header is not a JSON object".to_string()))?;

    let mut out = Vec::with_capacity(obj.len());
    for (name, info) in obj {
        if name == "__metadata__" {
            continue;
        }
        let info = info.as_object().ok_or_else(|| bad(format!("entry {name:?} is not an object")))?;
        let (dtype, shape, begin, end) = parse_entry(name, info).map_err(bad)?;
        if end > data_len {
            return Err(bad(format!("tensor {name:?}: data_offsets end {end} is past the {data_len}-byte data section")));
        }
        let numel = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("tensor {name:?}: shape {shape:?} overflows")))?;
        if let Some(size) = format_dtype_size(&dtype) {
            let want = numel.checked_mul(size).ok_or_else(|| bad(format!("tensor {name:?}: byte size overflows")))?;
            if want != end - begin {
                return Err(bad(format!(
                    "tensor {name:?}: {dtype} {shape:?} needs {want} bytes, data_offsets span {}",
                    end - begin
                )));
            }
        }
        let entry = match DType::from_safetensors(&dtype) {
            Some(dt) => {
                Entry::Tensor(TensorView::new(name.clone(), dt, shape, storage.clone(), data_start + begin, end - begin))
            }
            None => Entry::Unsupported { dtype },
        };
        out.push((name.clone(), entry));
    }
    Ok(out)
}

/// dtype, shape and data_offsets of one header entry; `Err` is the detail text.
fn parse_entry(name: &str, info: &Map<String, Value>) -> std::result::Result<(String, Vec<usize>, usize, usize), String> {
    let dtype = match info.get("dtype") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(format!("tensor {name:?}: dtype is not a string")),
        None => return Err(format!("tensor {name:?}: missing dtype")),
    };
    let shape = match info.get("shape") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| format!("tensor {name:?}: shape is not a list of non-negative integers"))?,
        Some(_) => return Err(format!("tensor {name:?}: shape is not a list")),
        None => return Err(format!("tensor {name:?}: missing shape")),
    };
    let offsets = match info.get("data_offsets") {
        Some(Value::Array(a)) if a.len() == 2 => a
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| format!("tensor {name:?}: data_offsets are not non-negative integers"))?,
        Some(_) => return Err(format!("tensor {name:?}: data_offsets is not a [begin, end] pair")),
        None => return Err(format!("tensor {name:?}: missing data_offsets")),
    };
    let (begin, end) = (offsets[0], offsets[1]);
    if begin > end {
        return Err(format!("tensor {name:?}: data_offsets [{begin}, {end}] are reversed"));
    }
    Ok((dtype, shape, begin, end))
}
