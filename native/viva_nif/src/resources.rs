//! BEAM resources: handles whose lifetime the VM's garbage collector owns.
use viva_core::llm::Llm;
use viva_core::scheduler::Scheduler;

/// A loaded model and its scheduler (the engine thread that batches every caller's generation).
/// `Llm` is immutable after load, so the low-level API also reads it from any process at once.
/// When the handle is collected the scheduler stops and the engine thread frees the model.
pub struct ModelResource {
    pub sched: Scheduler,
}

impl ModelResource {
    pub fn llm(&self) -> &Llm {
        self.sched.llm()
    }
}

#[rustler::resource_impl]
impl rustler::Resource for ModelResource {}
