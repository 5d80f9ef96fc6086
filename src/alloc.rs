//! Allocator tuning for Strata's long-running processes (`strata serve`, a lazy volume's
//! serving process).

/// Many threads (gRPC, FUSE, fetches) each get a glibc malloc arena by default, and each
/// arena keeps freed chunk buffers (chunks are up to megabytes): two arenas, and large
/// buffers always mapped and unmapped (no dynamic threshold), keep the process's footprint
/// to what it uses. Call before the process starts its threads.
pub fn tune_for_daemon() {
    // SAFETY: mallopt only tunes the allocator; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
    }
}

/// For a process whose big buffers are all one size, a few at a time (a lazy volume's
/// serving process: 4 MiB chunks): one arena, and buffers up to 32 MiB taken from it and
/// reused instead of mapped afresh — each fresh 4 MiB mapping cost 1024 page faults and
/// as many zeroed pages, 15 % of the process's time. One arena, not two: a freed buffer
/// is reused by whichever thread allocates next, which kept the peak RSS 6–12 MiB lower
/// (measured: see docs/volumes.md).
pub fn tune_for_chunk_buffers() {
    // SAFETY: mallopt only tunes the allocator; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
    }
}
