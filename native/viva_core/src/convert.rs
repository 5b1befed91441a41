//! Engine side of the seed-compatible helper NIFs (`viva_tensor_safetensors_ffi`): a
//! checkpoint's header layout, tensors as bf16, bf16 → f32, and a cache-tiled transpose (e.g.
//! turning a `[vocab, hidden]` LM head into `[hidden, vocab]`).
//!
//! Every bulk function writes into a caller-provided slice, so the NIF fills the BEAM binary it
//! returns directly (one pass, no intermediate `Vec`). Fast paths have plain `_ref` twins that
//! the tests compare them with.
use std::io::Read;
use std::path::{Path, PathBuf};

use half::bf16;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::safetensors::Checkpoint;
use crate::tensor::{DType, TensorView};

// ---------------------------------------------------------------- header layout

/// One tensor of a checkpoint's headers, as the file stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderEntry {
    pub name: String,
    /// The safetensors dtype string verbatim ("BF16", "F16", "F32", "I64", ...).
    pub dtype: String,
    /// The file (shard) holding the tensor.
    pub file: PathBuf,
    /// Byte offset of the file's data section: 8 + the header's length.
    pub data_start: u64,
    /// `Some` for the dtypes the engine reads (F32/F16/BF16); `None` for the others, whose
    /// entries the engine keeps by name and dtype only.
    pub layout: Option<TensorLayout>,
}

/// Shape and placement of a readable tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorLayout {
    pub shape: Vec<usize>,
    /// `[begin, end)` relative to the data section, exactly the header's `data_offsets`.
    pub data_offsets: (u64, u64),
}

/// Every tensor of a checkpoint (a `.safetensors` file, a `model.safetensors.index.json` or a
/// folder), sorted by name. The checkpoint is validated in full by [`Checkpoint::open`]; each
/// of its files is then opened alone to learn which tensor lives where.
pub fn header_entries(path: &Path) -> Result<Vec<HeaderEntry>> {
    let ckpt = Checkpoint::open(path)?;
    let mut out = Vec::with_capacity(ckpt.len());
    for file in &ckpt.files {
        let shard = Checkpoint::open(file)?;
        let data_start = data_section_start(file)?;
        for name in shard.names() {
            let (dtype, layout) = match shard.get(name) {
                Ok(t) => {
                    let begin = (t.file_offset() as u64).checked_sub(data_start).ok_or_else(|| {
                        Error::Internal(format!("{name}: data before the data section of {}", file.display()))
                    })?;
                    let layout = TensorLayout {
                        shape: t.shape.clone(),
                        data_offsets: (begin, begin + t.bytes().len() as u64),
                    };
                    (dtype_name(t.dtype).to_string(), Some(layout))
                }
                Err(Error::UnsupportedDtype { dtype, .. }) => (dtype, None),
                Err(e) => return Err(e),
            };
            out.push(HeaderEntry { name: name.to_string(), dtype, file: file.clone(), data_start, layout });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The safetensors name of a dtype the engine reads.
pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "F32",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
    }
}

/// 8 + the little-endian u64 header length at the start of a safetensors file (the file was
/// already validated by `Checkpoint::open`, so the length is known to fit).
fn data_section_start(file: &Path) -> Result<u64> {
    let mut len = [0u8; 8];
    std::fs::File::open(file).and_then(|mut f| f.read_exact(&mut len)).map_err(|e| Error::io(file, e))?;
    Ok(8 + u64::from_le_bytes(len))
}

// ---------------------------------------------------------------- bf16 ⇄ f32

/// Elements converted per parallel task: 64 Ki elements (128–256 KiB of input) amortize
/// rayon's scheduling and keep a task's data in L2.
const CHUNK: usize = 1 << 16;

/// Bytes [`write_bf16`] writes for `t`.
pub fn bf16_len(t: &TensorView) -> usize {
    t.numel() * 2
}

/// `t` as little-endian bf16 into `dst` (`bf16_len(t)` bytes): BF16 is copied verbatim; F16 and
/// F32 are rounded to nearest, ties to even (`half::bf16::from_f32`; F16 → F32 is exact, so F16
/// is rounded once). ±Inf stay ±Inf, NaN stays NaN (quiet, sign kept), finite values above
/// bf16's largest round to ±Inf as IEEE rounding does.
pub fn write_bf16(t: &TensorView, dst: &mut [u8]) -> Result<()> {
    if dst.len() != bf16_len(t) {
        return Err(shape_error(&t.name, bf16_len(t), dst.len()));
    }
    let src = t.bytes();
    match t.dtype {
        DType::BF16 => dst.copy_from_slice(src),
        DType::F32 => {
            dst.par_chunks_mut(2 * CHUNK).zip(src.par_chunks(4 * CHUNK)).for_each(|(d, s)| {
                for (o, c) in d.chunks_exact_mut(2).zip(s.chunks_exact(4)) {
                    let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    o.copy_from_slice(&bf16::from_f32(v).to_le_bytes());
                }
            })
        }
        DType::F16 => dst.par_chunks_mut(2 * CHUNK).zip(src.par_chunks(2 * CHUNK)).for_each(|(d, s)| {
            for (o, c) in d.chunks_exact_mut(2).zip(s.chunks_exact(2)) {
                let v = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
                o.copy_from_slice(&bf16::from_f32(v).to_le_bytes());
            }
        }),
    }
    Ok(())
}

/// Reference twin of [`write_bf16`]: element by element through `TensorView::get_f32`.
pub fn to_bf16_ref(t: &TensorView) -> Vec<u8> {
    (0..t.numel()).flat_map(|i| bf16::from_f32(t.get_f32(i)).to_le_bytes()).collect()
}

/// Bytes of the f32 output of `src_len` bytes of bf16; an odd length is `ShapeMismatch`
/// (expected: the next even size).
pub fn bf16_to_f32_len(src_len: usize) -> Result<usize> {
    if !src_len.is_multiple_of(2) {
        return Err(shape_error("bf16 binary (2 bytes per value)", src_len + 1, src_len));
    }
    src_len.checked_mul(2).ok_or(Error::OutOfMemory)
}

/// Little-endian bf16 `src` → little-endian f32 `dst` (twice as many bytes); exact. An odd
/// `src` length or a wrong `dst` length is `ShapeMismatch` (sizes in bytes).
pub fn bf16_to_f32_into(src: &[u8], dst: &mut [u8]) -> Result<()> {
    bf16_to_f32_len(src.len())?;
    if dst.len() != 2 * src.len() {
        return Err(shape_error("f32 output", 2 * src.len(), dst.len()));
    }
    dst.par_chunks_mut(4 * CHUNK).zip(src.par_chunks(2 * CHUNK)).for_each(|(d, s)| {
        for (o, c) in d.chunks_exact_mut(4).zip(s.chunks_exact(2)) {
            // bf16 is the top half of an f32: widen by a 16-bit shift.
            o.copy_from_slice(&((u16::from_le_bytes([c[0], c[1]]) as u32) << 16).to_le_bytes());
        }
    });
    Ok(())
}

/// Reference twin of [`bf16_to_f32_into`], through `half`.
pub fn bf16_to_f32_ref(src: &[u8]) -> Vec<f32> {
    src.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
}

fn shape_error(name: &str, expected: usize, got: usize) -> Error {
    Error::ShapeMismatch { name: name.to_string(), expected: vec![expected], got: vec![got] }
}

// ---------------------------------------------------------------- transpose

/// Tile edge: a 32×32 tile of 4-byte words reads 32 source lines of 128 B and writes 32
/// destination runs of 128 B, 8 KiB in all, which stays in L1 while the tile is copied.
const TILE: usize = 32;

/// `src` (rows, cols) row-major → `dst` (cols, rows) row-major, `rows * cols` elements each.
/// Cache-tiled; bands of TILE destination rows (= TILE source columns) run in parallel, each
/// band writing only its own part of `dst`. Generic over the element so that f32 matrices move
/// as raw 4-byte words with no decode/encode.
pub fn transpose_into<T: Copy + Send + Sync>(src: &[T], dst: &mut [T], rows: usize, cols: usize) -> Result<()> {
    let n = rows.checked_mul(cols);
    if n != Some(src.len()) || n != Some(dst.len()) {
        return Err(Error::ShapeMismatch {
            name: "transpose (rows, cols)".into(),
            expected: vec![rows, cols],
            got: vec![src.len(), dst.len()],
        });
    }
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    dst.par_chunks_mut(TILE * rows).enumerate().for_each(|(band, out)| {
        // out: (c1 - c0, rows), the transposes of source columns c0..c1
        let c0 = band * TILE;
        for r0 in (0..rows).step_by(TILE) {
            let r1 = (r0 + TILE).min(rows);
            for (j, o) in out.chunks_exact_mut(rows).enumerate() {
                let c = c0 + j;
                for (r, slot) in (r0..r1).zip(&mut o[r0..r1]) {
                    *slot = src[r * cols + c];
                }
            }
        }
    });
    Ok(())
}

/// Reference twin of [`transpose_into`]: the plain double loop.
pub fn transpose_ref<T: Copy + Default>(src: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut dst = vec![T::default(); rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
    dst
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::tensor::Storage;

    /// A small deterministic generator (xorshift64*), so the tests need no rand dependency.
    fn bits(seed: u64, n: usize) -> Vec<u32> {
        let mut s = seed.max(1);
        (0..n)
            .map(|_| {
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
            })
            .collect()
    }

    fn view(dtype: DType, bytes: Vec<u8>) -> TensorView {
        let n = bytes.len() / dtype.size();
        let len = bytes.len();
        TensorView::new("t".into(), dtype, vec![n], Arc::new(Storage::Heap(bytes)), 0, len)
    }

    /// Index of the first element where two bf16 byte strings differ, NaN matching any NaN
    /// (`half` quiets NaN payloads on a round trip through f32, a verbatim copy keeps them).
    fn first_bf16_diff(a: &[u8], b: &[u8]) -> Option<usize> {
        assert_eq!(a.len(), b.len());
        let v = |s: &[u8], i: usize| bf16::from_le_bytes([s[2 * i], s[2 * i + 1]]);
        (0..a.len() / 2).find(|&i| v(a, i).to_bits() != v(b, i).to_bits() && !(v(a, i).is_nan() && v(b, i).is_nan()))
    }

    fn fast_bf16(t: &TensorView) -> Result<Vec<u8>> {
        let mut out = vec![0u8; bf16_len(t)];
        write_bf16(t, &mut out)?;
        Ok(out)
    }

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;


    #[test]
    fn tiled_transpose_matches_reference_on_ragged_shapes() -> TestResult {
        let shapes = [(1, 1), (1, 70), (70, 1), (31, 33), (33, 65), (64, 32), (100, 257), (257, 1000), (2048, 3)];
        for (r, c) in shapes {
            let src: Vec<u32> = bits((r * 131 + c) as u64, r * c);
            let (mut t, mut back) = (vec![0; r * c], vec![0; r * c]);
            transpose_into(&src, &mut t, r, c)?;
            assert_eq!(t, transpose_ref(&src, r, c), "{r}x{c}");
            transpose_into(&t, &mut back, c, r)?;
            assert_eq!(back, src, "{r}x{c} twice");
        }
        Ok(())
    }

    #[test]
    fn transpose_rejects_wrong_sizes_and_accepts_empty() -> TestResult {
        let mut dst = vec![0f32; 6];
        assert!(matches!(transpose_into(&[0f32; 6], &mut dst, 4, 3), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(transpose_into(&[0f32; 6], &mut dst[..5], 2, 3), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(transpose_into(&[0f32; 0], &mut [], usize::MAX, 2), Err(Error::ShapeMismatch { .. })));
        transpose_into::<f32>(&[], &mut [], 0, 5)?;
        Ok(())
    }

    #[test]
    fn bf16_to_f32_matches_reference_on_every_code() -> TestResult {
        let src: Vec<u8> = (0..=u16::MAX).flat_map(|c| c.to_le_bytes()).collect();
        let mut dst = vec![0u8; 2 * src.len()];
        bf16_to_f32_into(&src, &mut dst)?;
        let got = dst.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        for (i, (g, w)) in got.zip(bf16_to_f32_ref(&src)).enumerate() {
            // the shift keeps NaN payloads bit for bit; `half` may quiet them
            assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "code {i:#06x}: {g} vs {w}");
            assert_eq!(g.to_bits(), (i as u32) << 16, "code {i:#06x} is the top half of its f32");
        }
        assert!(matches!(bf16_to_f32_into(&[0, 0, 0], &mut [0; 6]), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(bf16_to_f32_into(&[0, 0], &mut [0; 2]), Err(Error::ShapeMismatch { .. })));
        Ok(())
    }

    #[test]
    fn f32_to_bf16_rounds_to_nearest_even() -> TestResult {
        let one = 1.0f32.to_bits();
        let cases: [(u32, u16); 8] = [
            (one, 0x3F80),
            (one + 0x7FFF, 0x3F80),         // below half an ulp: down
            (one + 0x8000, 0x3F80),         // tie, even below: down
            (one + 0x8001, 0x3F81),         // above half: up
            (one + 0x1_8000, 0x3F82),       // tie, odd below: up to even
            (f32::MAX.to_bits(), 0x7F80),   // overflows to +Inf
            (f32::NEG_INFINITY.to_bits(), 0xFF80),
            (0x8000_0001, 0x8000),          // -denormal → -0
        ];
        for (x, want) in cases {
            let t = view(DType::F32, x.to_le_bytes().to_vec());
            assert_eq!(fast_bf16(&t)?, want.to_le_bytes(), "{x:#x}");
        }
        let nan = view(DType::F32, f32::NAN.to_le_bytes().to_vec());
        let b = fast_bf16(&nan)?;
        assert!(bf16::from_le_bytes([b[0], b[1]]).is_nan());
        Ok(())
    }

    #[test]
    fn write_bf16_matches_reference_for_every_dtype() -> TestResult {
        let n = 3 * CHUNK + 17; // several parallel chunks and a ragged tail
        let raw = bits(7, n);
        let f32s: Vec<u8> = raw.iter().flat_map(|b| b.to_le_bytes()).collect();
        let f16s: Vec<u8> = raw.iter().flat_map(|b| (*b as u16).to_le_bytes()).collect();
        for t in [view(DType::F32, f32s), view(DType::F16, f16s.clone()), view(DType::BF16, f16s.clone())] {
            assert_eq!(first_bf16_diff(&fast_bf16(&t)?, &to_bf16_ref(&t)), None, "{:?}", t.dtype);
        }
        assert!(fast_bf16(&view(DType::BF16, f16s.clone()))? == f16s, "BF16 is copied verbatim");
        // every f16 code: f16 → bf16 is one rounding of an exact f32
        let all: Vec<u8> = (0..=u16::MAX).flat_map(|c| c.to_le_bytes()).collect();
        let t = view(DType::F16, all);
        assert_eq!(first_bf16_diff(&fast_bf16(&t)?, &to_bf16_ref(&t)), None);
        let mut short = vec![0u8; 3];
        assert!(matches!(write_bf16(&t, &mut short), Err(Error::ShapeMismatch { .. })));
        Ok(())
    }

    /// header_entries agrees with each file's raw JSON header, for a single file and for the
    /// sharded fixture (where the same offsets recur in both shards).
    #[test]
    fn header_entries_match_the_raw_headers() -> TestResult {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures");
        for (ckpt, n_files) in [("tiny_gqa", 1), ("tiny_mha_sharded/model.safetensors.index.json", 2)] {
            let entries = header_entries(&fixtures.join(ckpt))?;
            let mut files = std::collections::BTreeSet::new();
            for e in &entries {
                let bytes = std::fs::read(&e.file)?;
                let n = u64::from_le_bytes(bytes[..8].try_into()?);
                assert_eq!(e.data_start, 8 + n);
                let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n as usize])?;
                let raw = &header[&e.name];
                let layout = e.layout.as_ref().ok_or("entry without a layout")?;
                assert_eq!(raw["dtype"], e.dtype.as_str());
                assert_eq!(raw["shape"], serde_json::json!(layout.shape));
                assert_eq!(raw["data_offsets"], serde_json::json!([layout.data_offsets.0, layout.data_offsets.1]));
                files.insert(e.file.clone());
            }
            assert_eq!(files.len(), n_files, "{ckpt}");
            assert!(entries.windows(2).all(|w| w[0].name < w[1].name), "sorted by name");
        }
        assert!(matches!(header_entries(&fixtures.join("nope.safetensors")), Err(Error::FileNotFound(_))));
        Ok(())
    }
}
