//! The model's weights at load: the formats' load option and activations (formats/ holds the
//! formats themselves), and the token embedding table.
use half::bf16;

pub use crate::formats::{Activations, Linear, WeightFormat};
use crate::formats::bf16::extend_bf16;
use crate::tensor::TensorView;

/// The token embedding table: native view, or bf16 rows for the packed formats.
pub enum Embedding {
    Native(TensorView),
    /// (vocab, hidden) bf16 bits
    Bf16 { hidden: usize, data: Vec<u16> },
}

impl Embedding {
    pub fn new(t: &TensorView, format: WeightFormat) -> Self {
        if format.embeds_as_stored() {
            return Embedding::Native(t.clone());
        }
        let mut data = Vec::with_capacity(t.numel());
        extend_bf16(&mut data, t);
        Embedding::Bf16 { hidden: t.shape[1], data }
    }

    /// Row `id` into `out` (hidden). The caller checks `id` < vocab.
    pub fn row(&self, id: usize, out: &mut [f32]) {
        match self {
            Embedding::Native(t) => t.read_f32_into(id * out.len(), out),
            Embedding::Bf16 { hidden, data } => {
                for (o, &b) in out.iter_mut().zip(&data[id * hidden..(id + 1) * hidden]) {
                    *o = bf16::from_bits(b).to_f32();
                }
            }
        }
    }
}
