//! Room left for a growing session file: free space on its filesystem (less a reserve the
//! operator chose) and the process's file-size limit (`ulimit -f`), whichever is tighter.
//!
//! HDF5 writes its superblock before the data it points to, so a write that fails half-way
//! through a flush leaves a file whose recorded end lies past its real end, and the library then
//! refuses to open it. Stopping *before* the disk is full, while a clean close is still possible,
//! is what keeps a recording intact.

use std::path::Path;

/// Bytes the file at `path` (now `file_len` bytes) may still grow by; `None` if neither limit
/// could be read (the caller then relies on write errors alone).
pub fn headroom_bytes(path: &Path, file_len: u64, min_free_bytes: u64) -> Option<u64> {
    let disk = free_bytes(path.parent().unwrap_or(path)).map(|f| f.saturating_sub(min_free_bytes));
    let rlimit = file_size_limit().map(|l| l.saturating_sub(file_len));
    match (disk, rlimit) {
        (Some(d), Some(r)) => Some(d.min(r)),
        (d, r) => d.or(r),
    }
}

/// Bytes available to an unprivileged writer on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is a plain C struct of integers, for which all-zero bytes are a valid value.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    Some((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
}

/// The soft RLIMIT_FSIZE in bytes, if there is one.
fn file_size_limit() -> Option<u64> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `r` is a writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut r) } != 0 || r.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(r.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_directory_has_finite_headroom_and_a_reserve_reduces_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("x.h5");
        let free = headroom_bytes(&p, 0, 0).expect("statvfs works on a temp dir");
        assert!(free > 0);
        let less = headroom_bytes(&p, 0, free / 2).expect("statvfs");
        assert!(less < free, "{less} !< {free}");
        assert_eq!(headroom_bytes(&p, 0, u64::MAX), Some(0));
    }
}
