//! How much freed memory the server's heap keeps.
//!
//! Every transcript batch allocates a few megabytes (the body, its decoded lines, SQLite's
//! pages) and frees them when it is stored. glibc returns freed memory at the top of a heap to
//! the kernel once more than 128 KiB is free there, so the next batch faulted the same pages in
//! again, zeroed: on kcap-bench's one-client SQLite row, 66,000 minor page faults per 200 MB and
//! about 40 % of the server's system time. Keeping a pad of [`TOP_PAD`] at the top of each heap
//! cut the faults to about 7,000 and the system time by about 40 %.
//!
//! The cost is memory the process keeps after a burst: at most [`TOP_PAD`] per glibc arena
//! that grew that far (arenas are per thread, at most eight per core), still bounded by the
//! server's concurrency, never by the store's size.

/// Freed memory each heap keeps at its top, and the step by which it grows.
pub const TOP_PAD: usize = 16 * 1024 * 1024;

/// Sets glibc's top pad to [`TOP_PAD`] for the whole process; returns whether the allocator
/// took it (false where the C library is not glibc). Call it once, early in `kcap serve`.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only adjusts allocator parameters, under glibc's own arena locks.
        unsafe { libc::mallopt(libc::M_TOP_PAD, TOP_PAD as libc::c_int) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_top_pad() {
        assert!(keep_freed_memory(), "mallopt(M_TOP_PAD) refused");
    }
}
