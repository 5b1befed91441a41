//! Buffers for packed weights, backed by 2 MB pages where the OS allows it.
//!
//! Why: decode streams every weight once per token. With 4 KB pages the CPU's stream
//! prefetchers stop at each page boundary and every 4 KB costs a TLB walk; on Linux with
//! transparent huge pages in `madvise` mode (a common default) an anonymous buffer only gets
//! 2 MB pages when asked, before its pages are first touched. llama.cpp's weights live in the
//! page cache of the mmapped GGUF, which the kernel already backs with large folios.
const HUGE_PAGE: usize = 2 << 20;

/// A zero-filled Vec of `n` elements whose buffer has been advised for huge pages (Linux; a
/// plain Vec elsewhere, or when the advice is refused). Small buffers are left alone.
pub fn huge_vec<T: Clone + Default>(n: usize) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    advise_huge(v.as_ptr() as usize, n * std::mem::size_of::<T>());
    v.resize(n, T::default());
    v
}

/// An empty Vec with capacity `n`, advised as in [`huge_vec`] (for `extend`).
pub fn huge_vec_with_capacity<T>(n: usize) -> Vec<T> {
    let v: Vec<T> = Vec::with_capacity(n);
    advise_huge(v.as_ptr() as usize, n * std::mem::size_of::<T>());
    v
}

#[cfg(target_os = "linux")]
fn advise_huge(addr: usize, len: usize) {
    // whole 2 MB pages inside [addr, addr + len)
    let start = addr.next_multiple_of(HUGE_PAGE);
    let end = (addr + len) / HUGE_PAGE * HUGE_PAGE;
    if end > start {
        // SAFETY: the range lies inside an allocation this process owns (the Vec's capacity);
        // MADV_HUGEPAGE only changes how it is backed, never its contents or validity. A
        // failure (THP disabled, old kernel) leaves ordinary pages, which is fine.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_addr: usize, _len: usize) {}

#[cfg(test)]
mod tests {
    #[test]
    fn huge_vec_is_zeroed_and_sized() {
        let v: Vec<u16> = super::huge_vec(3 << 20);
        assert_eq!(v.len(), 3 << 20);
        assert!(v.iter().all(|&x| x == 0));
        let w: Vec<f32> = super::huge_vec_with_capacity(5);
        assert!(w.is_empty() && w.capacity() >= 5);
    }
}
