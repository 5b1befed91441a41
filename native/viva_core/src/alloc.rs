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
impl Zeroable for u64 {}

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

/// Size caps for the JSON files a checkpoint holds, far above real ones, so a huge or endless
/// file (its parsed tree is several times its size) is refused instead of exhausting memory.
/// tokenizer.json: Gemma's is ~33 MB, Llama-3's 9 MB.
pub const MAX_TOKENIZER_JSON: u64 = 256 << 20;
/// config.json, generation_config.json, tokenizer_config.json (Llama-3's is 50 kB),
/// model.safetensors.index.json (a 405B model's is ~100 kB).
pub const MAX_SMALL_JSON: u64 = 64 << 20;

/// The bytes of `path`, refused (`BadFormat`) when the file is larger than `max` bytes; the
/// read itself is fallible (`OutOfMemory`).
pub fn read_file(path: &std::path::Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len > max {
        return Err(Error::bad_format(path, format!("file is {len} bytes, more than the {max} this file can need")));
    }
    let mut buf = try_with_capacity(len as usize)?;
    // `take`: a file that grows while being read stays within the cap
    file.take(max).read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
    Ok(buf)
}

/// [`read_file`] as UTF-8 text (`BadFormat` when it is not).
pub fn read_text(path: &std::path::Path, max: u64) -> Result<String> {
    String::from_utf8(read_file(path, max)?).map_err(|_| Error::bad_format(path, "not UTF-8"))
}
