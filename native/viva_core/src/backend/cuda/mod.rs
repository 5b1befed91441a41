//! CUDA backend: one process-wide GPU (device 0), our kernels compiled by NVRTC, the model's
//! weights device-resident, and decode sessions that replay one CUDA graph per token.
//!
//! cudarc loads libcuda / libnvrtc / libcublas at run time; its loader panics when a library
//! is missing, so `gpu()` checks `is_culib_present()` first and runs the whole initialisation
//! under `catch_unwind`: no driver, a broken driver or no GPU is an `Err(reason)`, never a crash.
pub mod check;
mod errors;
pub mod kernels;
pub mod launch;
pub mod model;
pub mod params;
pub mod seq;
pub mod session;
pub mod weights;

use std::panic::catch_unwind;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::sys as blas_sys;
use cudarc::driver::{sys, CudaContext};

use crate::error::{Error, Result};
pub(crate) use errors::{cuda_err, drv};

pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub name: String,
    pub cc: (i32, i32),
    pub total_mem: usize,
    pub sm_count: usize,
    pub k: kernels::Kernels,
    /// Idle cuBLAS handles (a handle serves one stream at a time; sessions borrow one).
    blas_pool: Mutex<Vec<BlasHandle>>,
}

/// A cuBLAS handle; owned by one session at a time.
pub struct BlasHandle(pub blas_sys::cublasHandle_t);
// SAFETY: a cuBLAS handle may move between threads; the pool hands it to one user at a time.
unsafe impl Send for BlasHandle {}

static GPU: OnceLock<std::result::Result<Arc<Gpu>, String>> = OnceLock::new();

/// The process's GPU, initialised on first use; `Err(reason)` when CUDA is unusable.
pub fn gpu() -> std::result::Result<Arc<Gpu>, String> {
    GPU.get_or_init(|| match catch_unwind(init) {
        Ok(r) => r,
        Err(_) => Err("CUDA initialisation panicked (driver libraries inconsistent?)".into()),
    })
    .clone()
}

/// `gpu()` for the load path: `CudaUnavailable` when there is none.
pub fn require_gpu() -> Result<Arc<Gpu>> {
    gpu().map_err(|_| Error::CudaUnavailable)
}

fn init() -> std::result::Result<Arc<Gpu>, String> {
    if crate::tuning::get().disable_cuda {
        return Err("disabled by VIVA_DISABLE_CUDA".into());
    }
    // SAFETY: these only try to open the shared libraries.
    let present = unsafe {
        (
            sys::is_culib_present(),
            cudarc::nvrtc::sys::is_culib_present(),
            blas_sys::is_culib_present(),
        )
    };
    match present {
        (false, _, _) => return Err("libcuda not found (no NVIDIA driver)".into()),
        (_, false, _) => return Err("libnvrtc not found (CUDA runtime compiler)".into()),
        (_, _, false) => return Err("libcublas not found".into()),
        _ => {}
    }
    let n = CudaContext::device_count().map_err(|e| format!("cuInit / device count failed: {e:?}"))?;
    if n < 1 {
        return Err("no CUDA device".into());
    }
    let ctx = CudaContext::new(0).map_err(|e| format!("context on device 0: {e:?}"))?;
    // SAFETY: every session orders its own work on its own stream and synchronises before the
    // host reads; weights are written once at load and synchronised before any session starts.
    unsafe { ctx.disable_event_tracking() };
    let attr = |a| ctx.attribute(a).map_err(|e| format!("device attribute: {e:?}"));
    let cc = (
        attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
        attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
    );
    if cc.0 < 7 {
        return Err(format!("compute capability {}.{} is below 7.0", cc.0, cc.1));
    }
    let sm_count = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as usize;
    let smem_optin = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)? as usize;
    let name = ctx.name().map_err(|e| format!("device name: {e:?}"))?;
    let total_mem = ctx.total_mem().map_err(|e| format!("device memory: {e:?}"))?;
    let k = kernels::Kernels::load(&ctx, cc, smem_optin).map_err(|e| e.to_string())?;
    Ok(Arc::new(Gpu { ctx, name, cc, total_mem, sm_count, k, blas_pool: Mutex::new(Vec::new()) }))
}

impl Gpu {
    /// A cuBLAS handle from the pool (created when none is idle).
    pub fn take_blas(&self) -> Result<BlasHandle> {
        if let Some(h) = self.blas_pool.lock().ok().and_then(|mut p| p.pop()) {
            return Ok(h);
        }
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        let h = cudarc::cublas::result::create_handle().map_err(|e| cuda_err("cublasCreate", e))?;
        Ok(BlasHandle(h))
    }

    pub fn give_blas(&self, h: BlasHandle) {
        if let Ok(mut p) = self.blas_pool.lock() {
            p.push(h);
        }
    }
}
