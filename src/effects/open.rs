//! The one way kcap opens a transcript: `<sessions dir>/<session-id>/<file>` in an agent's shape
//! (`crate::agent`), reached with `openat` one component at a time, the session directory and
//! the file both opened with `O_NOFOLLOW` (a symlink anywhere below the sessions directory is
//! refused, never followed), the file
//! with `O_NONBLOCK` (a FIFO cannot hang the open), then checked with `fstat`: anything but a
//! regular file with one link is refused. What is checked is the open descriptor itself, so the
//! file cannot be swapped between the check and the read.
//!
//! Every reader (the tail observer, the batch reader, the watcher's idle probe, import, the
//! finalizer's and `finalize --session`'s checks) goes through [`open_transcript`].

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::ids::SessionId;

/// Device and inode: what makes "the same file" across a rename over it.
pub type Identity = (u64, u64);

/// A transcript opened for reading, with what `fstat` said about it.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub identity: Identity,
    pub len: u64,
}

/// Why a transcript could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Nothing there (yet): not an attack, just absent.
    Missing,
    /// Something is there that kcap must never read: a symlink, a FIFO, a directory, a device,
    /// a hard link to another file, or a path that is not a session's transcript.
    Refused(String),
    /// The file is a transcript but reading it failed (permissions, I/O).
    Io(io::Error),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Missing => f.write_str("transcript missing"),
            OpenError::Refused(why) => write!(f, "{REFUSED}{why}"),
            OpenError::Io(e) => write!(f, "cannot open the transcript: {e}"),
        }
    }
}

impl std::error::Error for OpenError {}

impl OpenError {
    /// As an `io::Error`, for readers whose callers speak `io`: a refusal keeps its message and
    /// is recognisable with [`is_refusal`].
    pub fn into_io(self) -> io::Error {
        match self {
            OpenError::Missing => io::Error::new(io::ErrorKind::NotFound, "transcript missing"),
            OpenError::Refused(why) => io::Error::new(io::ErrorKind::InvalidInput, Refusal(why)),
            OpenError::Io(e) => e,
        }
    }
}

/// How every refusal's message starts, wherever it ends up (a park reason, a log line).
pub const REFUSED: &str = "transcript refused: ";

/// The payload of a refusal carried in an `io::Error`.
#[derive(Debug)]
struct Refusal(String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{REFUSED}{}", self.0)
    }
}

impl std::error::Error for Refusal {}

/// True when `e` came from a refusal (a symlink, FIFO, ...), as opposed to a missing file or
/// an I/O failure: retrying cannot help.
pub fn is_refusal(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Refusal>())
}

/// The session a transcript path names, if it has the exact shape of an agent's transcript
/// (`<root>/<session directory>/<file>`, no `.` or `..`; see [`crate::agent::Agent::session_of_path`]).
pub fn session_of_path(path: &Path) -> Result<SessionId, String> {
    crate::agent::of_transcript(path).map(|(_, session)| session)
}

/// Opens the transcript at `path` for reading, safely (see the module comment). A refusal is
/// logged once per process and path, with the reason.
pub fn open_transcript(path: &Path) -> Result<Opened, OpenError> {
    let result = open_inner(path);
    if let Err(OpenError::Refused(why)) = &result {
        log_refusal_once(path, why);
    }
    result
}

/// Device, inode and length of what is at `path` now, without following a final symlink and
/// without opening it (the watcher's idle probe: one `lstat`). `None` when nothing is there.
pub fn probe(path: &Path) -> io::Result<Option<(Identity, u64)>> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(((m.dev(), m.ino()), m.len()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn open_inner(path: &Path) -> Result<Opened, OpenError> {
    session_of_path(path).map_err(OpenError::Refused)?;
    let dir = path.parent().expect("checked above");
    let root = dir.parent().expect("checked above");
    // The root may be reached through symlinks (an agent's home on another disk is the user's
    // choice); below it, nothing is followed.
    let root_fd = open_at(None, root, libc::O_RDONLY | libc::O_DIRECTORY).map_err(|e| missing_or(e, path))?;
    let dir_name = dir.file_name().expect("checked above");
    let dir_fd = match open_at(
        Some(&root_fd),
        Path::new(dir_name),
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
    ) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
            let what = match std::fs::symlink_metadata(dir) {
                Ok(m) if m.file_type().is_symlink() => "is a symlink".to_string(),
                _ => "is not a directory".to_string(),
            };
            return Err(OpenError::Refused(format!(
                "session directory {} {what}",
                dir.display()
            )));
        }
        Err(e) => return Err(missing_or(e, path)),
    };
    let fd = match open_at(
        Some(&dir_fd),
        Path::new(path.file_name().expect("checked above")),
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
    ) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            let target = std::fs::read_link(path)
                .map(|t| format!(" (pointing at {})", t.display()))
                .unwrap_or_default();
            return Err(OpenError::Refused(format!(
                "{} is a symlink{target}",
                path.display()
            )));
        }
        Err(e) => return Err(missing_or(e, path)),
    };
    let file = File::from(fd);
    let meta = file.metadata().map_err(OpenError::Io)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return Err(OpenError::Refused(format!(
            "{} is {what}, not a regular file",
            path.display()
        )));
    }
    if meta.nlink() > 1 {
        return Err(OpenError::Refused(format!(
            "{} has {} hard links: it may be another file's content",
            path.display(),
            meta.nlink()
        )));
    }
    // Reads of a regular file never block; clear the flag anyway so nothing downstream is
    // surprised by EAGAIN.
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(Opened {
        identity: (meta.dev(), meta.ino()),
        len: meta.len(),
        file,
    })
}

fn missing_or(e: io::Error, path: &Path) -> OpenError {
    match e.raw_os_error() {
        Some(libc::ENOENT) => OpenError::Missing,
        Some(libc::ENOTDIR) => {
            OpenError::Refused(format!("a component of {} is not a directory", path.display()))
        }
        _ => OpenError::Io(e),
    }
}

fn open_at(dir: Option<&OwnedFd>, path: &Path, flags: i32) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let base: RawFd = dir.map_or(libc::AT_FDCWD, std::os::fd::AsRawFd::as_raw_fd);
    // SAFETY: openat with a valid C string and a descriptor we own (or AT_FDCWD).
    let fd = unsafe { libc::openat(base, c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn log_refusal_once(path: &Path, why: &str) {
    static SEEN: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if seen.get_or_insert_with(HashSet::new).insert(path.to_path_buf()) {
        tracing::error!(path = %path.display(), "transcript refused, nothing is read from it: {why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript(root: &Path, sid: SessionId) -> PathBuf {
        crate::agent::default().transcript_path(root, sid)
    }

    #[test]
    fn opens_a_regular_transcript() {
        let dir = tempfile::tempdir().unwrap();
        let sid = SessionId::new_random();
        let path = transcript(dir.path(), sid);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"{}\n").unwrap();
        let opened = open_transcript(&path).unwrap();
        assert_eq!(opened.len, 3);
        assert_eq!(probe(&path).unwrap().unwrap().0, opened.identity);
    }

    #[test]
    fn refuses_symlinks_fifos_directories_and_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("netrc");
        std::fs::write(&secret, b"machine x password hunter2\n").unwrap();

        let sid = SessionId::new_random();
        let path = transcript(dir.path(), sid);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&secret, &path).unwrap();
        assert!(matches!(open_transcript(&path), Err(OpenError::Refused(m)) if m.contains("symlink")));

        let sid = SessionId::new_random();
        let path = transcript(dir.path(), sid);
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join(path.file_name().unwrap()), b"{}\n").unwrap();
        std::os::unix::fs::symlink(&elsewhere, path.parent().unwrap()).unwrap();
        assert!(
            matches!(open_transcript(&path), Err(OpenError::Refused(m)) if m.contains("session directory"))
        );

        let sid = SessionId::new_random();
        let path = transcript(dir.path(), sid);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(open_transcript(&path), Err(OpenError::Refused(m)) if m.contains("FIFO")));

        let sid = SessionId::new_random();
        let path = transcript(dir.path(), sid);
        std::fs::create_dir_all(&path).unwrap();
        assert!(matches!(open_transcript(&path), Err(OpenError::Refused(m)) if m.contains("directory")));

        let sid = SessionId::new_random();
        let path = transcript(dir.path(), sid);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::hard_link(&secret, &path).unwrap();
        assert!(matches!(open_transcript(&path), Err(OpenError::Refused(m)) if m.contains("hard links")));

        let path = transcript(dir.path(), SessionId::new_random());
        assert!(matches!(open_transcript(&path), Err(OpenError::Missing)));
        assert!(matches!(
            open_transcript(&dir.path().join("events.jsonl")),
            Err(OpenError::Refused(_))
        ));
    }

    #[test]
    fn refusals_survive_the_trip_through_io_error() {
        let e = OpenError::Refused("x is a FIFO".into()).into_io();
        assert!(is_refusal(&e));
        assert!(e.to_string().contains("x is a FIFO"));
        assert!(!is_refusal(&OpenError::Missing.into_io()));
    }
}
