//! Waiting until a transcript may have changed: the live watcher's pause between looks.
//!
//! File notifications (inotify on Linux, through the `notify` crate) wake the watcher within a
//! millisecond of a write; polling is the fallback when notifications cannot be trusted or had:
//! `KCAP_FOLLOW=poll`, no inotify instance or watch left (`max_user_instances`,
//! `max_user_watches`), or a network filesystem, where writes made by another machine raise no
//! event. Either way every wait ends after a bound (the poll interval when polling, at least
//! [`NOTIFY_LONGEST_WAIT`] with notifications), so a missed or dropped event delays a line by
//! that bound and never stalls delivery.
//!
//! The watch is on the session directory, not on the file: it sees the transcript created,
//! renamed over or replaced as well as appended to, and it exists before the file does.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

/// Set to `poll` to follow transcripts by polling only (file notifications unused).
pub const FOLLOW_ENV: &str = "KCAP_FOLLOW";

/// With notifications, a wait without an event still ends after this long at least (or the
/// poll interval, if longer): the watcher looks at its agent and the idle limit, and a missed
/// event costs at most this. Waking only every 2 s keeps an idle watcher near 5 ms of CPU per
/// 30 s instead of the ~19 ms that waking at the 500 ms poll interval costs (kcap-bench live).
pub const NOTIFY_LONGEST_WAIT: Duration = Duration::from_secs(2);

/// How a [`Follower`] learns of changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// File notifications, with the longer of the poll interval and [`NOTIFY_LONGEST_WAIT`] as
    /// the longest wait.
    Notify,
    /// Polling every interval, and why notifications are not used.
    Poll(String),
}

/// Waits for changes to one transcript.
pub struct Follower {
    transcript: PathBuf,
    /// Longest wait; the polling interval in [`Mode::Poll`].
    interval: Duration,
    wake: Arc<tokio::sync::Notify>,
    /// Set by the notification thread when its watch is gone (the directory was removed or
    /// renamed, or the queue overflowed): the next wait sets it up again.
    lost: Arc<AtomicBool>,
    watch: Option<RecommendedWatcher>,
    mode: Mode,
    /// Notifications cannot work here (forced off, a network filesystem, no inotify): do not
    /// try again on every wait.
    settled: bool,
}

impl Follower {
    /// A follower of `transcript` whose waits last at most `interval`. The watch is set up by
    /// the first wait, so a follower that is never waited on (a hook's inline drain) costs
    /// nothing.
    pub fn new(transcript: &Path, interval: Duration) -> Follower {
        let mut follower = Follower {
            transcript: transcript.to_path_buf(),
            interval,
            wake: Arc::new(tokio::sync::Notify::new()),
            lost: Arc::new(AtomicBool::new(false)),
            watch: None,
            mode: Mode::Poll("not waited on yet".into()),
            settled: false,
        };
        if std::env::var(FOLLOW_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("poll")) {
            follower.settle(format!("{FOLLOW_ENV}=poll"));
        }
        follower
    }

    /// How changes are learnt right now.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Returns once the transcript may have changed, or after its bound at the latest. A
    /// non-zero `backoff` (a delivery just failed) is slept in full: a burst of writes must not
    /// hammer a server that is down.
    pub async fn wait(&mut self, backoff: Duration) {
        if !backoff.is_zero() {
            tokio::time::sleep(backoff).await;
            return;
        }
        if !self.settled && (self.watch.is_none() || self.lost.swap(false, Ordering::AcqRel)) {
            self.start_watch();
        }
        if self.watch.is_some() {
            let limit = self.interval.max(NOTIFY_LONGEST_WAIT);
            let _ = tokio::time::timeout(limit, self.wake.notified()).await;
        } else {
            tokio::time::sleep(self.interval).await;
        }
    }

    fn settle(&mut self, why: String) {
        tracing::info!(reason = %why, "following the transcript by polling");
        self.watch = None;
        self.settled = true;
        self.mode = Mode::Poll(why);
    }

    /// Watches the session directory; on failure, polls (and says why once).
    fn start_watch(&mut self) {
        self.watch = None;
        let Some(dir) = self.transcript.parent().map(Path::to_path_buf) else {
            return self.settle("the transcript has no directory".into());
        };
        if let Some(fs) = network_filesystem(&dir) {
            return self.settle(format!(
                "{} is on {fs}, where notifications miss remote writes",
                dir.display()
            ));
        }
        let name = self.transcript.file_name().map(OsString::from);
        let (wake, lost, watched) = (self.wake.clone(), self.lost.clone(), dir.clone());
        let handler = move |event: notify::Result<notify::Event>| {
            let relevant = match &event {
                Err(_) => {
                    lost.store(true, Ordering::Release);
                    true
                }
                Ok(e) if e.need_rescan() => true,
                // Opens and closes (ours included) change nothing; metadata changes neither.
                Ok(e)
                    if matches!(
                        e.kind,
                        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_))
                    ) =>
                {
                    false
                }
                Ok(e) => {
                    if e.paths.iter().any(|p| p == &watched) {
                        // The directory itself went away or moved: the watch is dead.
                        lost.store(true, Ordering::Release);
                        true
                    } else {
                        e.paths.is_empty() || e.paths.iter().any(|p| p.file_name() == name.as_deref())
                    }
                }
            };
            if relevant {
                wake.notify_one();
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => return self.settle(format!("file notifications unavailable: {e}")),
        };
        match watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                if self.mode != Mode::Notify {
                    tracing::info!(dir = %dir.display(), "following the transcript by file notifications");
                }
                self.watch = Some(watcher);
                self.mode = Mode::Notify;
                // Whatever happened before the watch existed is looked at once now.
                self.wake.notify_one();
            }
            // Not created yet (or gone): poll, and try again on the next wait.
            Err(e)
                if matches!(&e.kind, notify::ErrorKind::PathNotFound)
                    || matches!(&e.kind, notify::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound) =>
            {
                self.mode = Mode::Poll(format!("{} does not exist yet", dir.display()));
            }
            Err(e) => self.settle(format!("cannot watch {}: {e}", dir.display())),
        }
    }
}

/// The name of the network filesystem `dir` is on, if it is on one.
fn network_filesystem(dir: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs writes into a zeroed struct of its own type; `path` is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    // Magic numbers from statfs(2); f_type's width differs between platforms.
    #[allow(clippy::unnecessary_cast)]
    let magic = stat.f_type as u64 as u32;
    match magic {
        0x6969 => Some("NFS"),
        0x517B | 0xFF53_4D42 | 0xFE53_4D42 => Some("SMB/CIFS"),
        0x0102_1997 => Some("9p"),
        0x00C3_6400 => Some("CephFS"),
        0x5346_414F => Some("AFS"),
        0x6573_5546 => Some("FUSE"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Instant;

    #[tokio::test]
    async fn a_write_wakes_the_follower_before_its_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut follower = Follower::new(&path, Duration::from_secs(30));
        // The first wait sets the watch up and returns at once: the time before it is looked at.
        follower.wait(Duration::ZERO).await;
        assert_eq!(follower.mode(), &Mode::Notify);
        let writer = tokio::spawn({
            let path = path.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .unwrap();
                f.write_all(b"{}\n").unwrap();
            }
        });
        let started = Instant::now();
        follower.wait(Duration::ZERO).await;
        // Woken by the write, not by the 30 s interval.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn other_files_in_the_directory_do_not_wake_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut follower = Follower::new(&path, Duration::from_millis(300));
        follower.wait(Duration::ZERO).await;
        std::fs::write(dir.path().join("inuse.1.lock"), b"").unwrap();
        let started = Instant::now();
        follower.wait(Duration::ZERO).await;
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_missing_directory_is_polled_until_it_appears() {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("later");
        let path = session.join("events.jsonl");
        let mut follower = Follower::new(&path, Duration::from_millis(20));
        follower.wait(Duration::ZERO).await;
        assert!(matches!(follower.mode(), Mode::Poll(why) if why.contains("does not exist")));
        std::fs::create_dir(&session).unwrap();
        follower.wait(Duration::ZERO).await;
        assert_eq!(follower.mode(), &Mode::Notify);
    }
}
