//! Driver errors as `Error`s (every file of the backend maps its cudarc errors through these).
use cudarc::driver::{sys, DriverError};

use crate::error::Error;

pub(crate) fn cuda_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Cuda(format!("{what}: {e:?}"))
}

/// Maps a driver error; CUDA_ERROR_OUT_OF_MEMORY becomes `OutOfMemory`.
pub(crate) fn drv(what: &str) -> impl Fn(DriverError) -> Error + '_ {
    move |e: DriverError| {
        if e.0 == sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY {
            Error::OutOfMemory
        } else {
            cuda_err(what, e)
        }
    }
}
