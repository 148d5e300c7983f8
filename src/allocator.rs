//! Keeps freed heap memory for reuse instead of handing it back to the kernel at once.
//!
//! Every analysed frame allocates and frees tens of MB of short-lived buffers (the frame's FFT
//! spectrum and correlation surfaces, the resampled frame, patches, features). With glibc's
//! defaults, blocks of that size come from fresh mappings and go back on free, so every frame pays
//! thousands of page faults, which are expensive in a virtual machine. Measured with
//! `beamwatch bench --layers` on the 2-core AMD EPYC development VM (1020² frame, 2 threads,
//! alternating runs): registration 40–43 ms of wall time per frame with the defaults, 27–37 ms with
//! freed memory kept; the whole frame 242–266 ms → 209–241 ms; peak resident memory 177 → 207–231
//! MiB. What is kept is what the process already used at its peak, which the memory budget bounds.

/// Largest block glibc still serves from its heap (its ceiling on 64-bit is 32 MiB); above it,
/// blocks are mapped and unmapped as before.
const MMAP_THRESHOLD_BYTES: i32 = 32 << 20;
/// Free memory at the top of the heap beyond this goes back to the kernel.
const TRIM_THRESHOLD_BYTES: i32 = 1 << 30;

/// Sets the allocator up as above; call once, before any thread starts. Returns false where the C
/// library is not glibc or refuses a setting (then nothing, or only the first, changed).
#[must_use]
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
