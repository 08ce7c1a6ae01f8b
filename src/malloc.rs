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
//!
//! Every allocation also goes through [`Counting`], the binary's global allocator, which
//! counts the bytes held and their peak: on a CPU backend tensors are heap buffers, so
//! `mimo bench mimo` reads a training step's memory from it (two relaxed atomic additions per
//! allocation, nothing per element).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes held now through the global allocator.
static LIVE: AtomicU64 = AtomicU64::new(0);
/// Most bytes held at once since the last [`HeapCounter::reset_peak`].
static PEAK: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting what it hands out.
pub struct Counting;

fn grew(bytes: usize) {
    let now = LIVE.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
    if now > PEAK.load(Ordering::Relaxed) {
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

fn shrank(bytes: usize) {
    LIVE.fetch_sub(bytes as u64, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; the counters are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (so from `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `dealloc`, and `new_size` meets `realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

/// Reads [`Counting`]'s counters (a [`mimo_bench::perf::HeapMeter`]).
pub struct HeapCounter;

impl mimo_bench::perf::HeapMeter for HeapCounter {
    fn live(&self) -> u64 {
        LIVE.load(Ordering::Relaxed)
    }

    fn reset_peak(&self) {
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn peak(&self) -> u64 {
        PEAK.load(Ordering::Relaxed)
    }
}

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
