//! The model's weights on the GPU (read-only, shared by every session), built straight from the
//! checkpoint: no host copy of the model is made.
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};

use super::launch::{ATT_MAX_GROUP, ATT_MAX_QS};
use super::weights::{DevEmbedding, DevLinear};
use super::{drv, require_gpu, Gpu};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::formats::WeightFormat;
use crate::safetensors::Checkpoint;
use crate::tensor::TensorView;

pub struct DevLayer {
    pub attn_norm: CudaSlice<f32>, // (hidden)
    pub qkv: DevLinear,            // (q_dim + 2·kv_dim, hidden)
    pub wo: DevLinear,             // (hidden, q_dim)
    pub mlp_norm: CudaSlice<f32>,  // (hidden)
    pub gate_up: DevLinear,        // (2·intermediate, hidden)
    pub down: DevLinear,           // (hidden, intermediate)
}

pub struct CudaModel {
    pub gpu: Arc<Gpu>,
    pub config: ModelConfig,
    pub format: WeightFormat,
    pub embed: DevEmbedding,      // (vocab, hidden)
    pub layers: Vec<DevLayer>,
    pub norm: CudaSlice<f32>,     // (hidden)
    pub lm_head: DevLinear,       // (vocab, hidden)
    pub inv_freq: CudaSlice<f32>, // (head_dim / 2)
}

impl CudaModel {
    /// The checkpoint's weights on the GPU in `format`, one linear at a time: its tensors' bytes
    /// go to the device as stored and are converted there (fp8 packing, bf16 rounding), exactly
    /// as the host would convert them. `on_layer(i)` runs after block i is on the device.
    /// A model that does not fit is `OutOfMemory`; what was allocated is freed again.
    pub fn from_checkpoint(ckpt: &Checkpoint, config: &ModelConfig, format: WeightFormat, on_layer: &mut dyn FnMut(usize)) -> Result<Self> {
        let gpu = require_gpu()?;
        let c = config;
        let group = c.num_attention_heads / c.num_key_value_heads.max(1);
        if !c.head_dim.is_multiple_of(2) || c.head_dim > 1024 || group > ATT_MAX_GROUP || group * c.head_dim > ATT_MAX_QS {
            return Err(Error::invalid_option("device", format!("cuda: head_dim {} × group {group} exceeds the attention kernel", c.head_dim)));
        }
        let stream = gpu.ctx.new_stream().map_err(drv("stream"))?;
        let t = c.tensors(ckpt);
        let g = &gpu;
        let lin = |parts: &[TensorView]| DevLinear::from_parts(g, &stream, &parts.iter().collect::<Vec<_>>(), format);
        let vec = |v: &[f32]| stream.clone_htod(v).map_err(drv("upload"));
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            layers.push(DevLayer {
                attn_norm: vec(&t.attn_norm(i)?)?,
                qkv: lin(&t.qkv(i)?)?,
                wo: lin(&[t.o(i)?])?,
                mlp_norm: vec(&t.mlp_norm(i)?)?,
                gate_up: lin(&t.gate_up(i)?)?,
                down: lin(&[t.down(i)?])?,
            });
            on_layer(i);
        }
        let embed_t = t.embed()?;
        let lm_head = lin(&[t.lm_head(&embed_t)?])?;
        let model = CudaModel {
            config: c.clone(),
            format,
            embed: DevEmbedding::from_tensor(g, &stream, &embed_t, format)?,
            layers,
            norm: vec(&t.final_norm()?)?,
            lm_head,
            inv_freq: vec(&crate::backend::cpu::ops::rope_inv_freq(c))?,
            gpu: gpu.clone(),
        };
        // every GEMV stages its x (row_stride f32) in shared memory
        if let Some(l) = model.linears().find(|l| l.row_stride * 4 > model.gpu.k.gemv_smem_max) {
            return Err(Error::invalid_option("device", format!("cuda: a {}-wide linear needs more shared memory than the GPU has", l.k)));
        }
        stream.synchronize().map_err(drv("upload"))?;
        Ok(model)
    }

    pub fn linears(&self) -> impl Iterator<Item = &DevLinear> {
        self.layers.iter().flat_map(|l| [&l.qkv, &l.wo, &l.gate_up, &l.down]).chain(std::iter::once(&self.lm_head))
    }

    /// Bytes of weights one decode step reads (every linear once).
    pub fn bytes_per_token(&self) -> usize {
        self.linears().map(|l| l.nbytes()).sum()
    }
}

pub fn ptr<T>(s: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    s.device_ptr(stream).0
}
