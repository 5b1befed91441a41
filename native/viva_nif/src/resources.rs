//! BEAM resources: handles whose lifetime the VM's garbage collector owns.
use std::sync::Arc;

use viva_core::llm::Llm;

/// A loaded model. `Llm` is immutable after load and every generate call builds its own
/// KV cache, so one handle is shared by any number of processes at once without a lock.
pub struct ModelResource(pub Arc<Llm>);

#[rustler::resource_impl]
impl rustler::Resource for ModelResource {}
