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
