//! Device copies of the model's weights, in the load's format (weights.rs): fp8 codes + f32
//! scales exactly as packed on the host, or bf16 / f16 / f32 rows padded to 16 bytes (the
//! GEMV kernels read one 16-byte vector per lane). Same bytes as the CPU path, so the two
//! backends compute with identical weights.
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};

use super::kernels::WeightKind;
use super::model::{launch, ptr, Arg};
use super::{drv, Gpu};
use crate::quant::fp8::Blocking;
use crate::error::{Error, Result};
use crate::tensor::{DType, TensorView};
use crate::weights::{Embedding, Linear};

/// A [n, k] linear on the device.
pub struct DevLinear {
    pub kind: WeightKind,
    pub n: usize,
    pub k: usize,
    /// Elements per row in memory (k rounded up to 16 bytes).
    pub row_stride: usize,
    /// fp8: scales per row and K elements per scale; 1 and k otherwise.
    pub bpr: usize,
    pub block: usize,
    /// (n, row_stride) elements
    pub data: CudaSlice<u8>,
    /// (n, bpr) f32; a 1-element dummy for the unscaled kinds
    pub scales: CudaSlice<f32>,
}

impl DevLinear {
    pub fn upload(stream: &Arc<CudaStream>, lin: &Linear) -> Result<Self> {
        let (n, k) = lin.shape();
        match lin {
            Linear::Fp8(p) => {
                p.validate()?;
                Ok(DevLinear {
                    kind: WeightKind::Fp8,
                    n,
                    k,
                    row_stride: p.row_stride,
                    bpr: p.blocks_per_row,
                    block: p.block,
                    data: stream.clone_htod(&p.codes).map_err(drv("upload fp8 codes"))?,
                    scales: stream.clone_htod(&p.scales).map_err(drv("upload fp8 scales"))?,
                })
            }
            Linear::Bf16 { data, .. } => {
                let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
                Self::dense(stream, WeightKind::Bf16, n, k, &[&bytes])
            }
            Linear::Native(parts) => {
                let kind = native_kind(&parts[0])?;
                if let Some(p) = parts.iter().find(|p| native_kind(p).ok() != Some(kind)) {
                    return Err(Error::UnsupportedDtype { name: p.name.clone(), dtype: format!("{:?} mixed with {kind:?}", p.dtype) });
                }
                let bytes: Vec<&[u8]> = parts.iter().map(|p| p.bytes()).collect();
                Self::dense(stream, kind, n, k, &bytes)
            }
        }
    }

    /// A checkpoint-dtype (`Native`) linear packed to fp8 on the device: bit-identical to
    /// `PackedFp8::prepack` on the host (kernels/quant.cu), without the host pass.
    pub fn upload_fp8(gpu: &Gpu, stream: &Arc<CudaStream>, lin: &Linear, blocking: Blocking) -> Result<Self> {
        let src = Self::upload(stream, lin)?;
        if src.kind == WeightKind::Fp8 {
            return Ok(src);
        }
        let (n, k) = (src.n, src.k);
        let block = blocking.block_len(k)?;
        let bpr = k.div_ceil(block);
        let row_stride = k.div_ceil(16) * 16;
        let codes = stream.alloc_zeros::<u8>(n * row_stride).map_err(drv("alloc fp8 codes"))?; // (n, row_stride)
        let scales = stream.alloc_zeros::<f32>(n * bpr).map_err(drv("alloc fp8 scales"))?; // (n, bpr)
        let warps = n * bpr;
        launch(stream, gpu.k.quant_fp8(src.kind), (warps.div_ceil(8) as u32, 1, 1), 256, 0, &[
            Arg::P(ptr(&src.data, stream)),
            Arg::I(n as i32),
            Arg::I(k as i32),
            Arg::I(src.row_stride as i32),
            Arg::I(block as i32),
            Arg::I(row_stride as i32),
            Arg::I(bpr as i32),
            Arg::P(ptr(&codes, stream)),
            Arg::P(ptr(&scales, stream)),
        ])?;
        Ok(DevLinear { kind: WeightKind::Fp8, n, k, row_stride, bpr, block, data: codes, scales })
    }

    /// Row-major (n, k) parts (stacked along rows) → rows padded to 16 bytes.
    fn dense(stream: &Arc<CudaStream>, kind: WeightKind, n: usize, k: usize, parts: &[&[u8]]) -> Result<Self> {
        let es = kind.size();
        let row_stride = (k * es).div_ceil(16) * 16 / es;
        let mut buf = vec![0u8; n * row_stride * es]; // (n, row_stride)
        let mut r = 0;
        for part in parts {
            for row in part.chunks_exact(k * es) {
                buf[r * row_stride * es..r * row_stride * es + k * es].copy_from_slice(row);
                r += 1;
            }
        }
        if r != n {
            return Err(Error::Internal(format!("linear rows {r} != {n}")));
        }
        Ok(DevLinear {
            kind,
            n,
            k,
            row_stride,
            bpr: 1,
            block: k,
            data: stream.clone_htod(&buf).map_err(drv("upload weight"))?,
            scales: stream.alloc_zeros::<f32>(1).map_err(drv("alloc"))?,
        })
    }

    /// Bytes a GEMV reads.
    pub fn nbytes(&self) -> usize {
        self.n * self.row_stride * self.kind.size() + if self.kind == WeightKind::Fp8 { self.n * self.bpr * 4 } else { 0 }
    }

    pub fn ptr(&self, stream: &CudaStream) -> (u64, u64) {
        (self.data.device_ptr(stream).0, self.scales.device_ptr(stream).0)
    }
}

fn native_kind(t: &TensorView) -> Result<WeightKind> {
    match t.dtype {
        DType::BF16 => Ok(WeightKind::Bf16),
        DType::F16 => Ok(WeightKind::F16),
        DType::F32 => Ok(WeightKind::F32),
        #[allow(unreachable_patterns)]
        other => Err(Error::UnsupportedDtype { name: t.name.clone(), dtype: format!("{other:?}") }),
    }
}

/// The embedding table (vocab, hidden) on the device: bf16 for the packed formats, the
/// checkpoint's dtype for `native`.
pub struct DevEmbedding {
    pub kind: WeightKind,
    pub data: CudaSlice<u8>,
}

impl DevEmbedding {
    pub fn upload(stream: &Arc<CudaStream>, e: &Embedding) -> Result<Self> {
        let (kind, bytes): (WeightKind, Vec<u8>) = match e {
            Embedding::Native(t) => (native_kind(t)?, t.bytes().to_vec()),
            Embedding::Bf16 { data, .. } => (WeightKind::Bf16, data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        };
        Ok(DevEmbedding { kind, data: stream.clone_htod(&bytes).map_err(drv("upload embedding"))? })
    }
}
