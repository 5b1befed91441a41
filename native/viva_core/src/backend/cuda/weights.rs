//! Device copies of the model's weights, built straight from the checkpoint's tensors: the
//! mapped bytes go to the device as they are (rows padded to 16 bytes: the GEMV kernels read one
//! 16-byte vector per lane), and the load's format is made there: the format names its device
//! target (`Format::device_target`: a kernel kind and block), and that kind's pack kernel makes
//! it — fp8 packed by kernels/quant.cu (bit-identical to the host prepack), bf16 rounded there
//! (bit-identical to formats/bf16.rs). No host copy of a weight is made beyond one padded tensor at a time when its
//! rows are not 16-byte multiples, so the two backends compute with identical weights.
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};

use super::errors::drv;
use super::Gpu;
use super::launch;
use super::params::{QuantParams, WeightView};
use crate::error::{Error, Result};
use crate::formats::native::dtype_kind;
use crate::formats::{DeviceLayout, Linear, WeightFormat, WeightKind};
use crate::tensor::TensorView;

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

/// Elements per row of a `kind` weight k wide: k rounded up to 16 bytes.
fn padded(kind: WeightKind, k: usize) -> usize {
    (k * kind.size()).div_ceil(16) * 16 / kind.size()
}

fn dim(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::invalid_option("device", format!("cuda: {what} {v} exceeds the kernels' 32-bit indices")))
}

impl DevLinear {
    /// Checkpoint tensors (each (n_i, k), stacked along rows: the fused q·k·v or gate·up) as one
    /// `format` linear on the device.
    pub fn from_parts(gpu: &Gpu, stream: &Arc<CudaStream>, parts: &[&TensorView], format: WeightFormat) -> Result<Self> {
        let native = Linear::fuse(parts, WeightFormat::Native)?;
        let (n, k) = native.shape();
        let src = Self::dense(stream, &native.device_layout()?, n, k)?;
        let target = format.device_target(src.kind, src.k)?;
        match target.kind {
            kind if kind == src.kind => Ok(src),
            WeightKind::Fp8 => src.to_fp8(gpu, stream, target.block),
            WeightKind::Bf16 => src.to_bf16(gpu, stream),
            kind => Err(Error::Internal(format!("no device pack kernel makes {kind:?} weights"))),
        }
    }

    /// A linear already in its format on the host (the GPU tests' harness, check.rs): the same bytes.
    pub fn upload(stream: &Arc<CudaStream>, lin: &Linear) -> Result<Self> {
        let (n, k) = lin.shape();
        match lin.device_layout()? {
            DeviceLayout::Scaled { kind, row_stride, bpr, block, data, scales } => Ok(DevLinear {
                kind,
                n,
                k,
                row_stride,
                bpr,
                block,
                data: stream.clone_htod(data).map_err(drv("upload codes"))?,
                scales: stream.clone_htod(scales).map_err(drv("upload scales"))?,
            }),
            dense => Self::dense(stream, &dense, n, k),
        }
    }

    /// A dense layout's row blocks (n rows of k in all) in padded rows.
    fn dense(stream: &Arc<CudaStream>, layout: &DeviceLayout, n: usize, k: usize) -> Result<Self> {
        let DeviceLayout::Dense { kind, blocks } = layout else { return Err(Error::Internal("dense upload of a scaled layout".into())) };
        let mut d = Self::alloc_dense(stream, *kind, n, k)?;
        let mut row = 0;
        for b in blocks {
            d.write_rows(stream, row, b)?;
            row += b.len() / (k * kind.size()).max(1);
        }
        Ok(d)
    }

    /// Zeroed (n, padded k) rows of `kind`.
    fn alloc_dense(stream: &Arc<CudaStream>, kind: WeightKind, n: usize, k: usize) -> Result<Self> {
        let row_stride = padded(kind, k);
        dim(n * row_stride, "weight elements")?;
        Ok(DevLinear {
            kind,
            n,
            k,
            row_stride,
            bpr: 1,
            block: k,
            data: stream.alloc_zeros::<u8>(n * row_stride * kind.size()).map_err(drv("alloc weight"))?,
            scales: stream.alloc_zeros::<f32>(1).map_err(drv("alloc"))?,
        })
    }

    /// Row-major (rows, k) bytes of this linear's kind into rows `row0..`: one copy when rows
    /// need no padding, else padded on the host one tensor at a time.
    fn write_rows(&mut self, stream: &Arc<CudaStream>, row0: usize, bytes: &[u8]) -> Result<()> {
        let (es, k) = (self.kind.size(), self.k);
        let rows = bytes.len() / (k * es);
        if row0 + rows > self.n || rows * k * es != bytes.len() {
            return Err(Error::Internal(format!("linear rows {row0}+{rows} of {}", self.n)));
        }
        let pitch = self.row_stride * es;
        let mut dst = self.data.slice_mut(row0 * pitch..(row0 + rows) * pitch);
        if pitch == k * es {
            return stream.memcpy_htod(bytes, &mut dst).map_err(drv("upload weight"));
        }
        let mut buf = Vec::new();
        buf.try_reserve_exact(rows * pitch).map_err(|_| Error::OutOfMemory)?;
        for r in bytes.chunks_exact(k * es) {
            buf.extend_from_slice(r);
            buf.resize(buf.len() + pitch - k * es, 0);
        }
        stream.memcpy_htod(&buf, &mut dst).map_err(drv("upload weight"))
    }

    fn quant_params(&self, stream: &CudaStream, dst: u64, scales: u64, row_stride: usize, block: usize, bpr: usize) -> Result<QuantParams> {
        Ok(QuantParams {
            src: self.data.device_ptr(stream).0,
            codes: dst,
            scales,
            n: dim(self.n, "rows")?,
            k: dim(self.k, "width")?,
            src_stride: dim(self.row_stride, "row stride")?,
            block: dim(block, "block")?,
            row_stride: dim(row_stride, "row stride")?,
            bpr: dim(bpr, "blocks per row")?,
        })
    }

    /// This checkpoint-dtype linear packed to fp8 on the device: bit-identical to
    /// `PackedFp8::prepack` on the host (kernels/quant.cu), without the host pass.
    pub fn to_fp8(&self, gpu: &Gpu, stream: &Arc<CudaStream>, block: usize) -> Result<Self> {
        let (n, k) = (self.n, self.k);
        let bpr = k.div_ceil(block);
        let row_stride = padded(WeightKind::Fp8, k);
        let codes = stream.alloc_zeros::<u8>(n * row_stride).map_err(drv("alloc fp8 codes"))?; // (n, row_stride)
        let scales = stream.alloc_zeros::<f32>(n * bpr).map_err(drv("alloc fp8 scales"))?; // (n, bpr)
        let p = self.quant_params(stream, codes.device_ptr(stream).0, scales.device_ptr(stream).0, row_stride, block, bpr)?;
        launch::quant_fp8(gpu, stream, self.kind, &p)?;
        Ok(DevLinear { kind: WeightKind::Fp8, n, k, row_stride, bpr, block, data: codes, scales })
    }

    /// This checkpoint-dtype linear rounded to bf16 on the device (as formats/bf16.rs on the host).
    fn to_bf16(&self, gpu: &Gpu, stream: &Arc<CudaStream>) -> Result<Self> {
        let out = Self::alloc_dense(stream, WeightKind::Bf16, self.n, self.k)?;
        let p = self.quant_params(stream, out.data.device_ptr(stream).0, 0, out.row_stride, self.k, 1)?;
        launch::to_bf16(gpu, stream, self.kind, &p)?;
        Ok(out)
    }

    /// Bytes a GEMV reads.
    pub fn nbytes(&self) -> usize {
        self.n * self.row_stride * self.kind.size() + if self.kind == WeightKind::Fp8 { self.n * self.bpr * 4 } else { 0 }
    }

    /// The kernels' view of this weight (params.cuh WeightView).
    pub fn view(&self, stream: &CudaStream) -> WeightView {
        // dimensions were checked against i32 when the weight was made
        WeightView {
            data: self.data.device_ptr(stream).0,
            scales: self.scales.device_ptr(stream).0,
            n: self.n as i32,
            k: self.k as i32,
            row_stride: self.row_stride as i32,
            bpr: self.bpr as i32,
            block: self.block as i32,
            pad: 0,
        }
    }
}

/// The embedding table (vocab, hidden) on the device: the checkpoint's dtype for `native`, bf16
/// for the other formats (as `Embedding::new` on the host), rows unpadded.
pub struct DevEmbedding {
    pub kind: WeightKind,
    pub data: CudaSlice<u8>,
}

impl DevEmbedding {
    pub fn from_tensor(gpu: &Gpu, stream: &Arc<CudaStream>, t: &TensorView, format: WeightFormat) -> Result<Self> {
        let kind = dtype_kind(t)?;
        let (vocab, hidden) = (t.shape[0], t.shape[1]);
        dim(vocab * hidden, "embedding elements")?;
        let data = stream.clone_htod(t.bytes()).map_err(drv("upload embedding"))?;
        if format.embeds_as_stored() || kind == WeightKind::Bf16 {
            return Ok(DevEmbedding { kind, data });
        }
        let out = stream.alloc_zeros::<u8>(vocab * hidden * 2).map_err(drv("alloc embedding"))?;
        let p = QuantParams {
            src: data.device_ptr(stream).0,
            codes: out.device_ptr(stream).0,
            scales: 0,
            n: vocab as i32,
            k: hidden as i32,
            src_stride: hidden as i32,
            block: hidden as i32,
            row_stride: hidden as i32,
            bpr: 1,
        };
        launch::to_bf16(gpu, stream, kind, &p)?;
        Ok(DevEmbedding { kind: WeightKind::Bf16, data: out })
    }
}
