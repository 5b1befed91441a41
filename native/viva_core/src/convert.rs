//! Bulk conversions behind the seed-compatible helper NIFs: bf16 ⇄ f32 and a cache-tiled
//! transpose (e.g. turning a [vocab, hidden] LM head into [hidden, vocab]).
use half::bf16;
use rayon::prelude::*;

use crate::tensor::{DType, TensorView};

/// A tensor's values as little-endian bf16 bytes (bf16 copied, f16/f32 rounded to nearest even).
pub fn to_bf16_bytes(t: &TensorView) -> Vec<u8> {
    match t.dtype {
        DType::BF16 => t.bytes().to_vec(),
        _ => t.to_f32_vec().into_iter().flat_map(|v| bf16::from_f32(v).to_le_bytes()).collect(),
    }
}

/// Little-endian bf16 bytes → f32 (exact); None for an odd byte count.
pub fn bf16_to_f32(bytes: &[u8]) -> Option<Vec<f32>> {
    (bytes.len() % 2 == 0).then(|| bytes.chunks_exact(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)).collect())
}

/// Tile edge: a 32×32 f32 tile is 4 KiB per side, so source rows and destination rows of a tile
/// stay in L1 while it is copied.
const TILE: usize = 32;

/// `src` (rows, cols) row-major → `dst` (cols, rows) row-major, tiled; bands of TILE output
/// rows run in parallel. Generic over the element so raw 4-byte words move without decoding.
pub fn transpose_into<T: Copy + Send + Sync>(src: &[T], dst: &mut [T], rows: usize, cols: usize) {
    debug_assert!(src.len() == rows * cols && dst.len() == rows * cols);
    dst.par_chunks_mut(TILE * rows.max(1)).enumerate().for_each(|(band, out)| {
        let c0 = band * TILE;
        let c1 = (c0 + TILE).min(cols);
        for r0 in (0..rows).step_by(TILE) {
            let r1 = (r0 + TILE).min(rows);
            for c in c0..c1 {
                let o = &mut out[(c - c0) * rows..(c - c0 + 1) * rows];
                for r in r0..r1 {
                    o[r] = src[r * cols + c];
                }
            }
        }
    });
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
    use super::*;

    #[test]
    fn tiled_transpose_matches_reference_on_ragged_shapes() {
        for (r, c) in [(1, 1), (1, 70), (70, 1), (33, 65), (64, 32), (100, 257)] {
            let src: Vec<f32> = (0..r * c).map(|i| i as f32).collect();
            let (mut t, mut back) = (vec![0.0; r * c], vec![0.0; r * c]);
            transpose_into(&src, &mut t, r, c);
            assert_eq!(t, transpose_ref(&src, r, c), "{r}x{c}");
            transpose_into(&t, &mut back, c, r);
            assert_eq!(back, src);
        }
    }

    #[test]
    fn bf16_conversions_are_exact_where_representable() {
        let v = [1.0f32, -2.5, 0.15625, 2f32.powi(100)];
        let t = TensorView::from_f32("t", vec![4], &v);
        assert_eq!(bf16_to_f32(&to_bf16_bytes(&t)).unwrap(), v);
        assert_eq!(bf16_to_f32(&[0, 0, 0]), None);
    }
}
