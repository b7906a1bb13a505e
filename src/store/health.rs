//! Is the store usable? Checked by `kcap status`, `kcap doctor` and every hook, so a store that
//! cannot be written (a root-owned home after `sudo kcap …`, a read-only mount, a full disk) is
//! said out loud, with the reason, instead of silently costing the guarantees it backs.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::Store;

/// Below this much free space the store is reported as unusable: sled needs room for its
/// segments, and a write that fails half-way is what a full disk costs.
pub const MIN_FREE_BYTES: u64 = 1024 * 1024;

impl Store {
    /// `Err(reason)` when the store cannot be used (its directory cannot be created or
    /// written, or its filesystem is full), without opening it; the reason says what to do.
    pub fn health_quick(&self) -> Result<(), String> {
        let home = self.home();
        if let Err(e) = std::fs::create_dir_all(home) {
            return Err(format!(
                "cannot create {}: {e}{}",
                home.display(),
                owner_hint(home)
            ));
        }
        for path in [home.to_path_buf(), home.join("store")] {
            match writable(&path) {
                Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
                    return Err(format!(
                        "{} is not writable: it is on a read-only filesystem",
                        path.display()
                    ));
                }
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(format!(
                        "{} is not writable by this user ({e}){}",
                        path.display(),
                        owner_hint(&path)
                    ));
                }
                _ => {}
            }
        }
        if let Some(free) = free_bytes(home) {
            if free < MIN_FREE_BYTES {
                return Err(format!(
                    "the filesystem holding {} is full ({free} bytes free)",
                    home.display()
                ));
            }
        }
        Ok(())
    }

    /// [`Store::health_quick`], then the store itself is opened: what `kcap status` and
    /// `kcap doctor` check. (A hook checks only the quick part: its own store accesses find
    /// the rest, and one sled open less keeps it fast.)
    pub fn health(&self) -> Result<(), String> {
        self.health_quick()?;
        self.watermark(crate::ids::SessionId::from_bytes([0; 16]))
            .map(drop)
            .map_err(|e| format!("{} cannot be opened: {e}", self.home().join("store").display()))
    }
}

fn writable(path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: access() with a valid C string.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Bytes available to this user on the filesystem holding `path`.
pub(super) fn free_bytes(path: &Path) -> Option<u64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the struct we pass; zeroed is a valid initial value.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        Some(st.f_bavail as u64 * st.f_frsize as u64)
    }
}

/// " (owned by uid N: `sudo chown -R <you> <path>` gives it back)" when someone else owns it.
fn owner_hint(path: &Path) -> String {
    let existing = path.ancestors().find(|p| p.exists());
    let Some(meta) = existing.and_then(|p| std::fs::metadata(p).ok()) else {
        return String::new();
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() == me {
        return String::new();
    }
    format!(
        " (owned by uid {}, not by you (uid {me}): `sudo chown -R {me} {}` gives it back)",
        meta.uid(),
        existing.map_or(path, |p| p).display()
    )
}
