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
    spawn_detached_with_env(args, log, &[])
}

/// [`spawn_detached`] with `env` added to the child's environment (never its command line,
/// which every user can read in /proc).
pub fn spawn_detached_with_env(args: &[OsString], log: &Path, env: &[(&str, String)]) -> io::Result<u32> {
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
    command.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    for (key, value) in env {
        command.env(key, value);
    }
    // SAFETY: the closure only calls async-signal-safe functions (setsid, close/close_range).
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

/// Closes every descriptor above stderr. Rust opens its own files close-on-exec, but the hook's
/// parent may have handed us descriptors that are not.
fn close_inherited_fds() {
    // SAFETY: plain syscalls on descriptor numbers; a failure only means nothing to close.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) == 0 {
            return;
        }
        let max = match libc::sysconf(libc::_SC_OPEN_MAX) {
            n if n > 0 => n.min(65_536) as i32,
            _ => 4_096,
        };
        for fd in 3..max {
            libc::close(fd);
        }
    }
}
