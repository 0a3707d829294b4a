//! The allocator setting `serve` runs with, and the only `unsafe` code in the binary.
#![allow(unsafe_code)]

/// Allocations of this size or more get pages of their own (`mmap`), unmapped when freed:
/// 128 KiB, glibc's own starting value, now kept fixed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: i32 = 128 * 1024;

/// Makes the memory of large buffers go back to the system when their connections close.
///
/// glibc raises its mmap threshold each time it frees an mmapped block, up to 32 MiB, so after
/// the first large frame buffer is freed the next ones come from the heap, where freed memory
/// stays with the process (measured: 40 connections holding 512 KiB of a frame each, opened
/// and closed three times, left the async server 13.8 MB above its start; threaded 6.8 MB).
/// A fixed threshold keeps every buffer of 128 KiB or more in pages of its own, which `free`
/// returns at once (with it: 0.3 MB and 2 MB after every round). `malloc_trim` after a
/// release would also work, but it walks every arena under its lock, and a server cannot
/// tell when the last of a burst of connections has gone. The cost is an `mmap`, page faults
/// and an `munmap` per large buffer: only frames and replies over 128 KiB pay it, and they
/// cost more in copying than in system calls. The library leaves the allocator alone: a
/// program that embeds socketkit chooses its own.
pub fn return_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets one of glibc's tunables from two integers; it reads and
    // writes no memory of ours, takes the allocator's lock itself, and runs before serving.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}
