//! Zero-copy views of checkpoint tensors (memory-mapped bytes + dtype + shape).
use std::sync::Arc;

use half::{bf16, f16};

/// Element types the loaders read. HF/safetensors names: "F32", "F16", "BF16".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Parses a safetensors dtype string; `None` for dtypes the engine does not read.
    pub fn from_safetensors(s: &str) -> Option<Self> {
        match s {
            "F32" => Some(DType::F32),
            "F16" => Some(DType::F16),
            "BF16" => Some(DType::BF16),
            _ => None,
        }
    }
}

/// Owner of the bytes a view points into: a memory map, or (for tests and converted
/// formats) a heap buffer.
pub enum Storage {
    Mmap(memmap2::Mmap),
    Heap(Vec<u8>),
    /// f32 values kept as such (dequantized GGUF tensors): no byte copy, and 4-aligned.
    F32(Vec<f32>),
    /// f32 values whose buffer goes back to an [`F32Pool`] when dropped (while the pool lives).
    Pooled(Vec<f32>, std::sync::Weak<F32Pool>),
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Storage::Pooled(v, pool) = self {
            if let Some(pool) = pool.upgrade() {
                pool.give(std::mem::take(v));
            }
        }
    }
}

/// f32 buffers for tensors made one after another (the lazily dequantized weights of a GGUF
/// load): a dropped tensor's buffer comes back here and the next tensor reuses it instead of
/// page-faulting fresh memory — first-touch faults of those buffers were ~25 % of a Q8_0 load
/// on the development VM. Freed with its last owner (the checkpoint's lazy entries).
#[derive(Default)]
pub struct F32Pool(std::sync::Mutex<Vec<Vec<f32>>>);

impl F32Pool {
    /// `len` zeros: in the smallest pooled buffer that holds them, else in a new one.
    pub fn take(&self, len: usize) -> Vec<f32> {
        let reused = self.0.lock().ok().and_then(|mut bufs| {
            let i = (0..bufs.len()).filter(|&i| bufs[i].capacity() >= len).min_by_key(|&i| bufs[i].capacity())?;
            Some(bufs.swap_remove(i))
        });
        let mut v = reused.unwrap_or_default();
        v.clear();
        v.resize(len, 0.0);
        v
    }

    fn give(&self, v: Vec<f32>) {
        if let Ok(mut bufs) = self.0.lock() {
            bufs.push(v);
        }
    }
}

impl Storage {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Heap(v) => v,
            // SAFETY: every f32 bit pattern is 4 initialised bytes; the view covers exactly the
            // Vec's 4·len bytes and borrows it. Little-endian targets only read it as LE f32
            // (see TensorView::f32_slice); get_f32/read_f32_into decode bytes explicitly.
            Storage::F32(v) | Storage::Pooled(v, _) => unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 4) },
        }
    }
}

/// One tensor: `shape` is row-major, as stored (HF linears are [out, in]).
#[derive(Clone)]
pub struct TensorView {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    storage: Arc<Storage>,
    offset: usize,
    len: usize,
}

impl std::fmt::Debug for TensorView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TensorView({}, {:?}, {:?})", self.name, self.dtype, self.shape)
    }
}

impl TensorView {
    /// `offset..offset+len` must lie inside `storage` and `len` must equal
    /// numel × dtype size; the loaders check both before calling this.
    pub fn new(name: String, dtype: DType, shape: Vec<usize>, storage: Arc<Storage>, offset: usize, len: usize) -> Self {
        debug_assert!(offset + len <= storage.bytes().len());
        debug_assert_eq!(len, shape.iter().product::<usize>() * dtype.size());
        TensorView { name, dtype, shape, storage, offset, len }
    }

    /// A heap-backed f32 tensor (tests, converted weights).
    pub fn from_f32(name: &str, shape: Vec<usize>, data: &[f32]) -> Self {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let len = bytes.len();
        TensorView::new(name.to_string(), DType::F32, shape, Arc::new(Storage::Heap(bytes)), 0, len)
    }

    /// An f32 tensor that owns `data` (no copy).
    pub fn from_f32_vec(name: &str, shape: Vec<usize>, data: Vec<f32>) -> Self {
        let len = data.len() * 4;
        TensorView::new(name.to_string(), DType::F32, shape, Arc::new(Storage::F32(data)), 0, len)
    }

    /// An f32 tensor owning `data` (from `pool.take`), which goes back to `pool` when the
    /// last view of it drops.
    pub fn from_pooled(name: &str, shape: Vec<usize>, data: Vec<f32>, pool: &Arc<F32Pool>) -> Self {
        let len = data.len() * 4;
        TensorView::new(name.to_string(), DType::F32, shape, Arc::new(Storage::Pooled(data, Arc::downgrade(pool))), 0, len)
    }

    /// The elements as an f32 slice without copying, when the tensor is F32, its bytes are
    /// 4-aligned and the target is little-endian; `None` otherwise (use `read_f32_into`).
    pub fn f32_slice(&self) -> Option<&[f32]> {
        let b = self.bytes();
        if self.dtype != DType::F32 || !cfg!(target_endian = "little") || b.as_ptr() as usize % 4 != 0 {
            return None;
        }
        // SAFETY: 4-aligned (checked), len is numel·4 bytes inside the storage (constructor
        // contract), any bit pattern is a valid f32, little-endian so the bytes are the values.
        Some(unsafe { std::slice::from_raw_parts(b.as_ptr() as *const f32, b.len() / 4) })
    }

    /// Byte offset of the data in its file (safetensors: header included).
    pub fn file_offset(&self) -> usize {
        self.offset
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.storage.bytes()[self.offset..self.offset + self.len]
    }

    /// Element `i` as f32 (little-endian, unaligned-safe).
    #[inline]
    pub fn get_f32(&self, i: usize) -> f32 {
        let b = self.bytes();
        match self.dtype {
            DType::F32 => f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]),
            DType::F16 => f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32(),
            DType::BF16 => bf16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32(),
        }
    }

    /// Elements `start..start+out.len()` converted to f32 into `out`.
    pub fn read_f32_into(&self, start: usize, out: &mut [f32]) {
        let b = self.bytes();
        let sz = self.dtype.size();
        let src = &b[start * sz..(start + out.len()) * sz];
        match self.dtype {
            DType::F32 => {
                for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            DType::F16 => {
                for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                    *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            DType::BF16 => {
                for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                    *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
        }
    }

    /// The whole tensor as f32.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let mut v = vec![0.0; self.numel()];
        self.read_f32_into(0, &mut v);
        v
    }
}
