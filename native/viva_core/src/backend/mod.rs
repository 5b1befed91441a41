//! Backend selection: where a model's forward pass runs.
//!
//! `Device::Auto` takes CUDA when a usable GPU is found and the CPU otherwise; `Device::Cuda`
//! without one is `Error::CudaUnavailable`. Probing never panics: a missing libcuda, a broken
//! driver or no device all become a reason in `BackendInfo`.
#[cfg(feature = "cuda")]
pub mod cuda;

/// What the machine offers, and why CUDA is or is not usable.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendInfo {
    pub cuda_available: bool,
    /// "ok", or why CUDA is unusable (no libcuda, driver error, no device, not built with CUDA).
    pub cuda_reason: String,
    /// GPU name, compute capability (major, minor), memory in bytes, SM count; when available.
    pub gpu_name: Option<String>,
    pub compute_capability: Option<(i32, i32)>,
    pub gpu_memory: Option<usize>,
    pub sm_count: Option<usize>,
    pub cpu_threads: usize,
    /// The backend `Device::Auto` picks: "cuda" or "cpu".
    pub auto: &'static str,
}

pub fn info() -> BackendInfo {
    let cpu_threads = rayon::current_num_threads();
    #[cfg(feature = "cuda")]
    {
        match cuda::gpu() {
            Ok(g) => BackendInfo {
                cuda_available: true,
                cuda_reason: "ok".into(),
                gpu_name: Some(g.name.clone()),
                compute_capability: Some(g.cc),
                gpu_memory: Some(g.total_mem),
                sm_count: Some(g.sm_count),
                cpu_threads,
                auto: "cuda",
            },
            Err(e) => unavailable(e.to_string(), cpu_threads),
        }
    }
    #[cfg(not(feature = "cuda"))]
    unavailable("built without the cuda feature".into(), cpu_threads)
}

fn unavailable(reason: String, cpu_threads: usize) -> BackendInfo {
    BackendInfo {
        cuda_available: false,
        cuda_reason: reason,
        gpu_name: None,
        compute_capability: None,
        gpu_memory: None,
        sm_count: None,
        cpu_threads,
        auto: "cpu",
    }
}
