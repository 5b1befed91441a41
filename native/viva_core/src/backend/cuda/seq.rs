//! The backend interface on the GPU: a thin adapter, each operation one `CudaSession` call.
use super::model::CudaModel;
use super::session::CudaSession;
use crate::backend::Backend;
use crate::error::Result;

impl<'m> Backend for &'m CudaModel {
    type Seq = CudaSession<'m>;

    fn name(self) -> &'static str {
        "cuda"
    }

    fn new_seq(self, max_seq: usize) -> Result<CudaSession<'m>> {
        CudaSession::new(self, max_seq)
    }

    fn filled(self, seq: &CudaSession<'m>) -> usize {
        seq.pos()
    }

    fn prefill(self, seq: &mut CudaSession<'m>, ids: &[u32]) -> Result<()> {
        seq.prefill(ids)
    }

    fn step(self, batch: &mut [(&mut CudaSession<'m>, u32)]) -> Result<()> {
        for (seq, id) in batch.iter_mut() {
            seq.step(*id)?;
        }
        Ok(())
    }

    fn logits(self, seq: &mut CudaSession<'m>) -> Result<Vec<f32>> {
        seq.logits()
    }

    fn argmax(self, seq: &mut CudaSession<'m>) -> Result<u32> {
        seq.argmax()
    }

    fn top_k(self, seq: &mut CudaSession<'m>, k: usize) -> Result<Vec<(u32, f32)>> {
        seq.top_k(k)
    }
}
