//! Fallible allocation for buffers sized by a file, an option or a request. Rust aborts the
//! process when an allocation fails — the whole BEAM node with it, `catch_unwind` cannot help —
//! so such buffers are reserved here and a failure is `Error::OutOfMemory`.
use std::alloc::Layout;

use crate::error::{Error, Result};

/// Element types whose all-zero bit pattern is the value zero.
pub trait Zeroable: Copy {}
impl Zeroable for f32 {}
impl Zeroable for u8 {}
impl Zeroable for u16 {}
impl Zeroable for u32 {}

/// `n` zeros, or `OutOfMemory`. Zeroed pages come from the allocator (calloc), so a large
/// buffer costs no memset and no memory until it is written, as with `vec![0.0; n]`.
pub fn try_zeroed<T: Zeroable>(n: usize) -> Result<Vec<T>> {
    if n == 0 || std::mem::size_of::<T>() == 0 {
        return Ok(Vec::new());
    }
    let layout = Layout::array::<T>(n).map_err(|_| Error::OutOfMemory)?;
    // SAFETY: the layout is non-zero-sized; a null return is an allocation failure.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) } as *mut T;
    if ptr.is_null() {
        return Err(Error::OutOfMemory);
    }
    // SAFETY: `ptr` came from the global allocator with `T`'s alignment and room for exactly
    // `n` values (the layout Vec frees with), and all-zero bytes are a valid `T` (Zeroable).
    Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
}

/// An empty Vec with room for `n` values, or `OutOfMemory`.
pub fn try_with_capacity<T>(n: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::OutOfMemory)?;
    Ok(v)
}

/// The product of `dims` (a buffer's element count), `OutOfMemory` when it overflows usize.
pub fn checked_len(dims: &[usize]) -> Result<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or(Error::OutOfMemory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_buffers_are_zeroed_and_huge_ones_are_out_of_memory() {
        assert_eq!(try_zeroed::<f32>(5).unwrap(), vec![0.0; 5]);
        assert!(try_zeroed::<u8>(0).unwrap().is_empty());
        assert_eq!(try_zeroed::<f32>(usize::MAX / 2).unwrap_err(), Error::OutOfMemory);
        assert_eq!(try_zeroed::<f32>(1 << 60).unwrap_err(), Error::OutOfMemory);
        assert_eq!(try_with_capacity::<u64>(1 << 60).unwrap_err(), Error::OutOfMemory);
        assert_eq!(try_with_capacity::<u64>(3).unwrap().capacity(), 3);
        assert_eq!(checked_len(&[2, 3, 4]).unwrap(), 24);
        assert_eq!(checked_len(&[usize::MAX, 2]).unwrap_err(), Error::OutOfMemory);
    }
}
