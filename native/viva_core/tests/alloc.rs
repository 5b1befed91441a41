//! alloc.rs: fallible buffers (sizes from files and requests) are `OutOfMemory`, never an abort.
use viva_core::alloc::{checked_len, try_with_capacity, try_zeroed};
use viva_core::Error;

#[test]
fn small_buffers_are_zeroed_and_huge_ones_are_out_of_memory() {
    assert_eq!(try_zeroed::<f32>(5), Ok(vec![0.0; 5]));
    assert_eq!(try_zeroed::<u8>(0), Ok(vec![]));
    assert_eq!(try_zeroed::<f32>(usize::MAX / 2).unwrap_err(), Error::OutOfMemory);
    assert_eq!(try_zeroed::<f32>(1 << 60).unwrap_err(), Error::OutOfMemory);
    assert_eq!(try_with_capacity::<u64>(1 << 60).unwrap_err(), Error::OutOfMemory);
    assert_eq!(try_with_capacity::<u64>(3).map(|v| v.capacity()), Ok(3));
    assert_eq!(checked_len(&[2, 3, 4]), Ok(24));
    assert_eq!(checked_len(&[usize::MAX, 2]).unwrap_err(), Error::OutOfMemory);
}
