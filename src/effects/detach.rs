//! Re-launching kcap as a detached process: its own session (setsid), stdin closed, output to a
//! log file, and no file descriptor inherited from the hook's parent, so the agent never waits on a
//! pipe the finalizer still holds open.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// True when this process already leads its own session (it is the detached child).
pub fn is_session_leader() -> bool {
    // SAFETY: getsid(0) and getpid() have no preconditions.
    unsafe { libc::getsid(0) == libc::getpid() }
}

/// Starts `current_exe args…` detached and returns its pid without waiting for it. Its output
/// goes to `log`, or to /dev/null when `log` cannot be written (an unwritable KCAP_HOME must not
/// stop delivery; the process says so in its own log fallback). Never to our stderr: the agent
/// would wait for the pipe to close.
pub fn spawn_detached(args: &[OsString], log: &Path) -> io::Result<u32> {
    spawn_detached_with_env(args, log, &[], None)
}

/// [`spawn_detached`] with `env` added to the child's environment, and `input` (if any) as its
/// stdin. Data goes in `input`, never in `env` or the command line: every user can read those
/// in /proc, and the kernel refuses a single string over 128 KiB (E2BIG) at exec.
pub fn spawn_detached_with_env(
    args: &[OsString],
    log: &Path,
    env: &[(&str, String)],
    input: Option<&[u8]>,
) -> io::Result<u32> {
    let out = log
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| OpenOptions::new().create(true).append(true).open(log))
        .or_else(|e| {
            tracing::warn!(log = %log.display(), error = %e, "cannot open the log; the detached process writes to /dev/null");
            OpenOptions::new().write(true).open("/dev/null")
        })?;
    let err = out.try_clone()?;
    let mut command = Command::new(std::env::current_exe()?);
    let stdin = match input {
        Some(bytes) => Stdio::from(input_file(bytes)?),
        None => Stdio::null(),
    };
    command.args(args).stdin(stdin).stdout(out).stderr(err);
    for (key, value) in env {
        command.env(key, value);
    }
    // SAFETY: the closure only calls async-signal-safe functions (setsid, close_range, fcntl).
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            close_inherited_fds();
            Ok(())
        });
    }
    Ok(command.spawn()?.id())
}

/// A file holding `bytes`, read from the start: memory only (memfd), or an unnamed 0600 file in
/// the temp directory where memfd is not allowed. Not a pipe: a pipe holds 64 KiB, and writing
/// more would wait on the child; the file is written in full before the child starts.
fn input_file(bytes: &[u8]) -> io::Result<std::fs::File> {
    use std::io::{Seek, Write};
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create takes a NUL-terminated name; a descriptor it returns is ours to own.
    let fd = unsafe { libc::memfd_create(c"kcap-input".as_ptr(), libc::MFD_CLOEXEC) };
    let mut file = if fd >= 0 {
        // SAFETY: `fd` was just created and nothing else owns it.
        unsafe { std::fs::File::from_raw_fd(fd) }
    } else {
        tempfile::tempfile()?
    };
    file.write_all(bytes)?;
    file.rewind()?;
    Ok(file)
}

/// Marks every descriptor above stderr close-on-exec, so none reaches the child. Rust opens its
/// own files close-on-exec, but the hook's parent may have handed us descriptors that are not.
/// Marked, not closed: std reports a failed exec (E2BIG, ENOENT) to `spawn` through a
/// close-on-exec pipe of its own, and closing that pipe here made a failed exec look started.
fn close_inherited_fds() {
    const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
    // SAFETY: plain syscalls on descriptor numbers; a failure only means nothing to mark.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) == 0 {
            return;
        }
        // Linux before 5.11 has no CLOSE_RANGE_CLOEXEC: mark what is open, not every number
        // up to OPEN_MAX (65,536 fcntl calls in every spawn).
        if mark_listed_fds() {
            return;
        }
        let max = match libc::sysconf(libc::_SC_OPEN_MAX) {
            n if n > 0 => n.min(65_536) as i32,
            _ => 4_096,
        };
        for fd in 3..max {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// A buffer for `getdents64`, aligned for its records' 64-bit fields.
#[repr(C, align(8))]
struct DirentBuf([u8; 4096]);

/// Marks close-on-exec each descriptor above stderr that /proc/self/fd lists, so the work is
/// bounded by what is open. Runs between fork and exec, so it allocates nothing: raw `open`,
/// `getdents64` and `fcntl` on a stack buffer. `false` if /proc cannot be read.
///
/// # Safety
/// Only plain syscalls; safe to call after fork in a multi-threaded process.
unsafe fn mark_listed_fds() -> bool {
    // SAFETY: see the function's contract.
    unsafe {
        let dir = libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if dir < 0 {
            return false;
        }
        let mut buf = DirentBuf([0; 4096]);
        let listed = loop {
            let n = libc::syscall(libc::SYS_getdents64, dir, buf.0.as_mut_ptr(), buf.0.len());
            if n <= 0 {
                break n == 0;
            }
            let records = &buf.0[..n as usize];
            let mut at = 0;
            // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
            while at + 19 <= records.len() {
                let len = u16::from_ne_bytes([records[at + 16], records[at + 17]]) as usize;
                if len == 0 || at + len > records.len() {
                    break;
                }
                if let Some(fd) = fd_number(&records[at + 19..at + len]) {
                    if fd > 2 && fd != dir {
                        let flags = libc::fcntl(fd, libc::F_GETFD);
                        if flags >= 0 {
                            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                        }
                    }
                }
                at += len;
            }
        };
        libc::close(dir);
        listed
    }
}

/// A directory entry's NUL-terminated name as a descriptor number (`.` and `..` are none).
fn fd_number(name: &[u8]) -> Option<i32> {
    let digits = name.split(|&b| b == 0).next()?;
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, &d| n * 10 + i32::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command the kernel refuses at exec (one string over 128 KiB) is an error of the
    /// spawn, not a pid of a child that died at once.
    #[test]
    fn a_failed_exec_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let huge: OsString = "x".repeat(200 * 1024).into();
        let spawned = spawn_detached(&[huge], &dir.path().join("log"));
        let e = spawned.expect_err("the exec cannot succeed");
        assert_eq!(e.raw_os_error(), Some(libc::E2BIG), "{e}");
    }

    /// The fallback for kernels without CLOSE_RANGE_CLOEXEC finds an inherited descriptor
    /// (opened without close-on-exec) by listing /proc/self/fd, and marks it.
    #[test]
    fn the_fallback_marks_every_listed_descriptor() {
        // SAFETY: a descriptor this test opens and closes.
        unsafe {
            let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            assert!(fd > 2);
            assert_eq!(libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC, 0);
            assert!(mark_listed_fds());
            assert_ne!(libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC, 0);
            libc::close(fd);
        }
        assert_eq!(fd_number(b"12\0\0"), Some(12));
        assert_eq!(fd_number(b".\0"), None);
        assert_eq!(fd_number(b"..\0"), None);
        assert_eq!(fd_number(b"\0"), None);
    }

    /// The child's stdin is the whole input, however large, and the parent never waits on it.
    #[test]
    fn input_larger_than_a_pipe_is_handed_over_whole() {
        use std::io::Read;
        let bytes: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
        let mut file = input_file(&bytes).unwrap();
        let mut back = Vec::new();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(back, bytes);
    }
}
