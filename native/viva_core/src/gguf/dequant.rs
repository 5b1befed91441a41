//! ggml tensor types and their dequantization to f32.
//!
//! Block formats (ggml's ggml-common.h), 32 weights a block:
//! - Q4_0: f16 d, 16 bytes of nibbles; byte j holds weight j (low nibble) and weight j+16
//!   (high nibble); w = (q − 8)·d.
//! - Q4_1: f16 d, f16 m, 16 bytes as Q4_0; w = q·d + m.
//! - Q8_0: f16 d, 32 i8; w = q·d.
use half::{bf16, f16};
use rayon::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    BF16,
}

impl GgmlType {
    /// ggml's type ids.
    pub fn from_u32(t: u32) -> Option<Self> {
        Some(match t {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// (weights per block, bytes per block)
    pub fn block(self) -> (u64, u64) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
        }
    }

    /// Bytes of `numel` weights; None when they are not whole blocks or overflow.
    pub fn byte_len(self, numel: u64) -> Option<u64> {
        let (w, b) = self.block();
        if numel % w != 0 {
            return None;
        }
        (numel / w).checked_mul(b)
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes `bytes` of type `ty` into `out` (its length is the element count).
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), String> {
    let (w, b) = ty.block();
    let (w, b) = (w as usize, b as usize);
    if out.len() % w != 0 || bytes.len() != out.len() / w * b {
        return Err(format!("{} bytes for {} weights of {ty:?}", bytes.len(), out.len()));
    }
    // blocks are independent: split big tensors across the pool in chunks of blocks
    const BLOCKS_PER_TASK: usize = 1024;
    out.par_chunks_mut(w * BLOCKS_PER_TASK).zip(bytes.par_chunks(b * BLOCKS_PER_TASK)).for_each(|(o, src)| {
        for (ob, blk) in o.chunks_exact_mut(w).zip(src.chunks_exact(b)) {
            dequantize_block(ty, blk, ob);
        }
    });
    Ok(())
}

#[inline]
fn dequantize_block(ty: GgmlType, blk: &[u8], out: &mut [f32]) {
    match ty {
        GgmlType::F32 => out[0] = f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]),
        GgmlType::F16 => out[0] = f16_at(blk, 0),
        GgmlType::BF16 => out[0] = bf16::from_le_bytes([blk[0], blk[1]]).to_f32(),
        GgmlType::Q4_0 => {
            let d = f16_at(blk, 0);
            for (j, &q) in blk[2..18].iter().enumerate() {
                out[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
                out[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
            }
        }
        GgmlType::Q4_1 => {
            let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
            for (j, &q) in blk[4..20].iter().enumerate() {
                out[j] = (q & 0x0F) as f32 * d + m;
                out[j + 16] = (q >> 4) as f32 * d + m;
            }
        }
        GgmlType::Q8_0 => {
            let d = f16_at(blk, 0);
            for (o, &q) in out.iter_mut().zip(&blk[2..34]) {
                *o = q as i8 as f32 * d;
            }
        }
    }
}
