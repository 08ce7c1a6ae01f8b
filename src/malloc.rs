//! glibc allocator settings for tensor work (Linux with glibc only).
//!
//! The CPU backend gives every tensor a fresh heap buffer, often tens of MB (the qkv
//! activations of one windowed SAM ViT-B block are 45 MB). glibc serves each allocation above
//! its mmap threshold (32 MB at most) with a fresh `mmap` and gives it back with `munmap` on
//! free, so every such tensor pays one page fault per 4 KiB page when first written, on every
//! operation. On this project's 2-core machine an element-wise add of two 45 MB tensors took
//! 30 ms, and 4.3 ms once the memory was reused; SAM ViT-B's image encoder went from 16.8 to
//! 15.7 s. So `mimo` asks glibc to serve every allocation from its heap (`M_MMAP_MAX = 0`)
//! and to keep freed memory for reuse (`M_TRIM_THRESHOLD` = 2 GiB), which is what the
//! allocators recommended for PyTorch on CPUs (jemalloc, tcmalloc) do as well. Peak memory
//! does not grow; memory freed after the peak is kept by the process instead of being handed
//! back. `MIMO_SYSTEM_MALLOC=1` keeps glibc's defaults.

/// Applies the settings above, unless `MIMO_SYSTEM_MALLOC` is set. Call it first in `main`,
/// before any thread starts.
pub fn tune_for_tensors() {
    if std::env::var_os("MIMO_SYSTEM_MALLOC").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes parameters of glibc's allocator; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Hands the free pages of the heap back to the system (`malloc_trim`). With freed memory kept
/// for reuse, what a model load frees (initial values replaced by the checkpoint's, casts)
/// would otherwise stay resident; the CLI calls this once a model is loaded.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns unused heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
