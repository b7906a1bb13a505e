//! The live watcher (`kcap watch`): delivers new complete lines while the session runs, with the
//! same reader, client, ids and watermark as the finalizer, so whichever delivers a line first,
//! the other skips it (or the server drops the replay).
//!
//! One watcher per session: it holds an exclusive lock on its pid file for its whole life; a
//! second one finds the lock taken and leaves. The hook finds the pid there to stop it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::now_ms;
use crate::effects::agent::AgentWatch;
use crate::effects::blocking;
use crate::effects::client::Client;
use crate::effects::delivery::{Deliverer, DeliveryError};
use crate::effects::follow::Follower;
use crate::effects::interpreter::Delivery;
use crate::effects::open::{open_transcript, probe, OpenError};
use crate::effects::outbox::{self, Flush};
use crate::effects::runs::{self, RunId};
use crate::ids::SessionId;
use crate::machine::{backoff_ms, Millis, Timings};
use crate::store::{Holder, Store};

pub fn pid_file(kcap_home: &Path, session: SessionId) -> PathBuf {
    kcap_home
        .join("watchers")
        .join(format!("{}.pid", session.dashed()))
}

/// Who holds a session's watcher lock: the live watcher, or a sessionEnd hook draining inline
/// after it. Only a watcher is ever signalled; a draining hook is waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Watch,
    Drain,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Watch => "watch",
            Role::Drain => "drain",
        }
    }
}

/// The holder of a session's watcher lock, as its pid file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockHolder {
    pub session: SessionId,
    pub process: Holder,
    pub role: Role,
    /// When it took the lock (epoch ms; 0 if the file predates this field).
    pub since: Millis,
    /// The session's run when it took the lock ([`runs::current`]; 0 if unknown).
    pub run: RunId,
}

/// The lock that makes a watcher the only one of its session, held until dropped.
pub struct WatcherLock {
    _file: File,
    /// The session's run when the lock was taken: a watcher's hand-over end is this run's.
    pub run: RunId,
}

/// Takes the session's watcher lock as a watcher and writes who we are, or `None` if it is held.
pub fn claim(kcap_home: &Path, session: SessionId) -> std::io::Result<Option<WatcherLock>> {
    claim_as(kcap_home, session, Role::Watch)
}

/// What [`claim_watch`] found.
pub enum WatchClaim {
    /// The lock is ours: we are the session's watcher.
    Taken(WatcherLock),
    /// A live watcher holds it (its pid, if its record can be read).
    Watched(Option<u32>),
    /// Something else held it for all of the patience given (its holder, if known).
    StillHeld(Option<LockHolder>),
}

/// Takes the session's watcher lock as a watcher, waiting while anything but a watcher holds
/// it: a sessionEnd hook draining inline, a finalizer or a sweep posting the session's end, or
/// the sweep expiring the session's run records hold it as a drain, for a few seconds at most.
/// A new watcher that left when it found one of them would leave its run unwatched. Gives up
/// at once on a live watcher, and after `patience` on a drain that does not end.
pub async fn claim_watch(
    kcap_home: &Path,
    session: SessionId,
    patience: Duration,
) -> std::io::Result<WatchClaim> {
    let started = Instant::now();
    let mut told = false;
    loop {
        let (home, s) = (kcap_home.to_path_buf(), session);
        let claimed = tokio::task::spawn_blocking(move || claim(&home, s))
            .await
            .map_err(std::io::Error::other)??;
        if let Some(lock) = claimed {
            return Ok(WatchClaim::Taken(lock));
        }
        let held = holder(kcap_home, session);
        match held {
            Some(h) if h.role == Role::Watch => return Ok(WatchClaim::Watched(Some(h.process.pid))),
            _ if started.elapsed() >= patience => return Ok(WatchClaim::StillHeld(held)),
            Some(h) if !told => {
                told = true;
                tracing::info!(
                    pid = h.process.pid,
                    "the session's lock is held by a drain; the watcher waits for it"
                );
            }
            // Released since the claim looked: try again at once.
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// How long a claim retries a lock it finds taken: [`holder`] probes the lock by taking it for
/// a few microseconds, and a probe must not make a free lock look held.
const PROBE_GRACE: Duration = Duration::from_millis(20);

/// Takes the session's watcher lock in `role`; `None` if another process holds it.
///
/// Taking over a stale pid file is atomic: the new record is written in full to a file of its
/// own, locked, and renamed over the pid file while the old one is locked, so a reader never
/// sees a half-written record, and a claimer that locked a file since replaced retries on the
/// one now in place.
pub fn claim_as(kcap_home: &Path, session: SessionId, role: Role) -> std::io::Result<Option<WatcherLock>> {
    static TMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let path = pid_file(kcap_home, session);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let me = Holder::current();
    let run = runs::current(kcap_home, session);
    let record = format!("{} {} {} {} {run}", me.pid, me.start_ticks, role.name(), now_ms());
    // A round repeats only when another claimer replaced the file meanwhile.
    for _ in 0..8 {
        let current = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        if !lock_within(&current, PROBE_GRACE)? {
            return Ok(None);
        }
        if !is_at(&current, &path) {
            continue;
        }
        let n = TMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("pid.{}.{n}.tmp", me.pid));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)?;
        let written = file
            .write_all(record.as_bytes())
            .and_then(|()| file.try_lock().map_err(std::io::Error::from))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        return Ok(Some(WatcherLock { _file: file, run }));
    }
    Ok(None)
}

/// Takes `file`'s lock, retrying for `grace` past a prober; `false` if it stays taken.
fn lock_within(file: &File, grace: Duration) -> std::io::Result<bool> {
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(TryLockError::WouldBlock) if started.elapsed() < grace => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(TryLockError::WouldBlock) => return Ok(false),
            Err(TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// Whether a process holds a flock on `file`, as /proc/locks says; `None` when it cannot be
/// read. Asking the kernel takes no lock, so a held lock is seen without getting in a
/// claimer's way.
fn flocked(file: &File) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let dev = meta.dev();
    let id = format!("{:02x}:{:02x}:{}", libc::major(dev), libc::minor(dev), meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    // "1: FLOCK  ADVISORY  WRITE <pid> <maj>:<min>:<inode> 0 EOF"; a waiter's line has "->"
    // in the second field and is not a holder.
    Some(locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&id.as_str())
    }))
}

/// `file` is the file at `path` (not one renamed over since it was opened).
fn is_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Who holds the session's watcher lock right now, if anyone.
pub fn holder(kcap_home: &Path, session: SessionId) -> Option<LockHolder> {
    use std::io::Read;
    let path = pid_file(kcap_home, session);
    let mut file = OpenOptions::new().read(true).open(&path).ok()?;
    // /proc/locks first: it takes no lock. Read while other locks change, it can miss an
    // entry, so "not listed" is confirmed by taking the lock for an instant (claimers retry
    // past such a probe).
    let held = flocked(&file) == Some(true) || file.try_lock().is_err();
    if !held {
        // A stale pid file from a killed process.
        return None;
    }
    // Read from the file looked at, not the path: its record was complete before it was put there.
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    if text.is_empty() {
        return None;
    }
    let mut fields = text.split_whitespace();
    let pid: u32 = fields.next()?.parse().ok()?;
    let start_ticks = fields.next().and_then(|t| t.parse().ok()).unwrap_or(0);
    let role = match fields.next() {
        Some("drain") => Role::Drain,
        _ => Role::Watch,
    };
    let since = fields.next().and_then(|t| t.parse().ok()).unwrap_or(0);
    let run = fields.next().and_then(|t| t.parse().ok()).unwrap_or(0);
    Some(LockHolder {
        session,
        process: Holder { pid, start_ticks },
        role,
        since,
        run,
    })
}

/// The pid of the session's running watcher (not a hook draining), if one holds the lock.
pub fn running(kcap_home: &Path, session: SessionId) -> Option<u32> {
    holder(kcap_home, session)
        .filter(|h| h.role == Role::Watch)
        .map(|h| h.process.pid)
}

/// Every session whose watcher lock is held, oldest first.
pub fn all_running(kcap_home: &Path) -> Vec<LockHolder> {
    let Ok(entries) = std::fs::read_dir(kcap_home.join("watchers")) else {
        return Vec::new();
    };
    let mut out: Vec<LockHolder> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let session: SessionId = name.to_str()?.strip_suffix(".pid")?.parse().ok()?;
            holder(kcap_home, session)
        })
        .collect();
    out.sort_by_key(|h| h.since);
    out
}

/// Sends SIGINT to the session's watcher, for a user (`kcap watchers stop`), if the lock holder
/// is a watcher and is the process that took the lock (never a hook, never a recycled pid).
/// A watcher that knows no agent process to watch takes it for the session's end (see `kcap
/// watch`), never the hook's SIGTERM ([`stop_run`]). Returns its pid.
pub fn stop_by_user(kcap_home: &Path, session: SessionId) -> Option<u32> {
    stop_if(kcap_home, session, |_| true, libc::SIGINT)
}

/// Sends SIGTERM (the sessionEnd hook's stop) to the session's watcher, as [`stop_by_user`]
/// picks it, only if it watches `run` (or its run is unknown): the end of one run never stops
/// the watcher of the run resumed after it.
pub fn stop_run(kcap_home: &Path, session: SessionId, run: RunId) -> Option<u32> {
    stop_if(kcap_home, session, |h| h.run == 0 || h.run == run, libc::SIGTERM)
}

fn stop_if(
    kcap_home: &Path,
    session: SessionId,
    which: impl Fn(&LockHolder) -> bool,
    signal: libc::c_int,
) -> Option<u32> {
    let h = holder(kcap_home, session)?;
    if h.role != Role::Watch || !which(&h) || !h.process.is_alive() || h.process.pid == std::process::id() {
        return None;
    }
    // SAFETY: signalling the process that holds this session's watcher lock as its watcher.
    unsafe { libc::kill(h.process.pid as libc::pid_t, signal) };
    Some(h.process.pid)
}

/// A live watcher of one session's transcript.
pub struct Watcher {
    pub store: Store,
    pub session: SessionId,
    pub transcript: PathBuf,
    pub delivery: Delivery,
    pub poll: Duration,
}

/// What a watcher counted.
#[derive(Debug, Default, Clone, Copy)]
pub struct WatchStats {
    pub batches: u64,
    pub lines: u64,
    pub failures: u64,
    /// As the server counted them (when it says).
    pub new: u64,
    pub duplicates: u64,
    /// Lines the server already held under the same number with other content (kept aside
    /// there, never overwriting): a rewritten transcript; worth seeing in the summary.
    pub conflicts: u64,
}

/// When a watcher ends by itself, besides being told to stop.
#[derive(Debug, Clone)]
pub struct Endings {
    /// Whose exit ends the session.
    pub agent: AgentWatch,
    /// A transcript that has not grown for this long ends the watcher.
    pub idle_limit: Option<Duration>,
}

/// Why a watcher stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Told to stop (SIGTERM by the sessionEnd hook, or the caller's future).
    Stopped,
    /// The session's agent process went away without a sessionEnd.
    AgentGone { pid: u32 },
    /// The transcript did not grow for the idle limit.
    Idle { for_ms: u64 },
}

/// The watcher's deliverer: the one delivery component, persisting through the store.
type WatchDeliverer = Deliverer<Client, Store>;

impl Watcher {
    /// Tails until `stop` resolves, then drains once more (bounded by `final_drain`) and returns.
    pub async fn run(
        &self,
        stop: impl std::future::Future<Output = ()>,
        final_drain: Duration,
    ) -> WatchStats {
        let endings = Endings {
            agent: AgentWatch::Unknown,
            idle_limit: None,
        };
        self.run_until(stop, &endings, final_drain).await.0
    }

    /// Tails until `stop` resolves or one of `endings` happens, then drains once more (bounded
    /// by `final_drain`) and says why it stopped.
    pub async fn run_until(
        &self,
        stop: impl std::future::Future<Output = ()>,
        endings: &Endings,
        final_drain: Duration,
    ) -> (WatchStats, Ended) {
        let mut stats = WatchStats::default();
        let mut deliverer = self.deliverer().await;
        // The finalizer's backoff policy (machine::backoff_ms), with the default timings.
        let timings = Timings::default();
        let mut failures = 0u32;
        let session_dir = self.transcript.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut last_growth = (Instant::now(), probe(&self.transcript).ok().flatten());
        let mut follower = Follower::new(&self.transcript, self.poll);
        tokio::pin!(stop);
        let ended = loop {
            let backoff = match failures {
                0 => Duration::ZERO,
                n => Duration::from_millis(backoff_ms(&timings, n)),
            };
            tokio::select! {
                biased;
                _ = &mut stop => break Ended::Stopped,
                _ = follower.wait(backoff) => {}
            }
            if let Some(pid) = endings.agent.gone(&session_dir) {
                tracing::warn!(pid, "the session's agent process is gone without a sessionEnd; draining and handing the session to a finalizer");
                break Ended::AgentGone { pid };
            }
            let now = probe(&self.transcript).ok().flatten();
            if now != last_growth.1 {
                last_growth = (Instant::now(), now);
            } else if let Some(limit) = endings.idle_limit {
                let idle = last_growth.0.elapsed();
                if idle >= limit {
                    tracing::warn!(
                        idle_ms = idle.as_millis() as u64,
                        "transcript idle past the limit; draining and handing the session to a finalizer"
                    );
                    break Ended::Idle {
                        for_ms: idle.as_millis() as u64,
                    };
                }
            }
            match self.deliver_available(&mut deliverer, &mut stats, false).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    stats.failures += 1;
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, retry_in_ms = backoff_ms(&timings, failures), "watcher delivery failed; keeping position");
                }
            }
        };
        tracing::info!(?ended, "watcher stopping: final drain");
        let drained = tokio::time::timeout(
            final_drain,
            self.deliver_available(&mut deliverer, &mut stats, false),
        )
        .await;
        match drained {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "final drain failed; the finalizer delivers the rest"),
            Err(_) => tracing::warn!("final drain ran out of time; the finalizer delivers the rest"),
        }
        (stats, ended)
    }

    /// A deliverer at the local watermark; max(local, server last-line + 1) is established on
    /// its first step, so an unreachable server does not delay the start.
    async fn deliverer(&self) -> WatchDeliverer {
        let (store, session) = (self.store.clone(), self.session);
        let local = match blocking(move || store.position(session)).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the watermark; starting from the server's last-line");
                None
            }
        };
        Deliverer::new(
            self.session,
            &self.transcript,
            self.delivery.client.clone(),
            Some(self.store.clone()),
            self.delivery.limits,
            local.map(|p| p.watermark),
            local.and_then(|p| p.identity),
        )
    }

    /// Delivers every complete line not yet delivered, once (`kcap import`); with
    /// `take_unterminated`, a last line without its newline too (its writer is known to be gone).
    pub async fn deliver_once(&self, take_unterminated: bool) -> Result<WatchStats, String> {
        let mut stats = WatchStats::default();
        let mut deliverer = self.deliverer().await;
        // A refused transcript is an error here: import reports it.
        if let Err(OpenError::Refused(why)) = open_transcript(&self.transcript).map(drop) {
            return Err(format!("transcript refused: {why}"));
        }
        self.deliver_available(&mut deliverer, &mut stats, take_unterminated)
            .await?;
        Ok(stats)
    }

    /// Sends every complete line after the deliverer's position, batch by batch, persisting
    /// after each 2xx. The session's pending start (and notifications) go first.
    async fn deliver_available(
        &self,
        deliverer: &mut WatchDeliverer,
        stats: &mut WatchStats,
        take_unterminated: bool,
    ) -> Result<(), String> {
        // Idle: one lstat, nothing else (no store, no network) until the file changes.
        let (at, identity) = deliverer.position();
        let changed = match probe(&self.transcript) {
            Ok(Some((now, len))) => identity != Some(now) || len != at.offset,
            _ => false,
        };
        if !changed {
            return Ok(());
        }
        // A refused file (logged once where it was refused) costs one open per poll, and
        // nothing else: no store, no server.
        if let Err(OpenError::Refused(_)) = open_transcript(&self.transcript).map(drop) {
            return Ok(());
        }
        let flushed = outbox::flush(
            &self.store,
            &self.delivery.client,
            Some(self.session),
            Flush::BeforeLines,
        )
        .await;
        if let Some(error) = flushed.failed {
            return Err(format!("the session's start is not on the server yet: {error}"));
        }
        let before = deliverer.counts;
        let result = deliverer.deliver_available(take_unterminated).await;
        let after = deliverer.counts;
        stats.batches += after.batches - before.batches;
        stats.lines += after.lines - before.lines;
        stats.new += after.new - before.new;
        stats.duplicates += after.duplicates - before.duplicates;
        stats.conflicts += after.conflicts - before.conflicts;
        match result {
            Ok(_) => {
                tracing::debug!(
                    next_line = deliverer.position().0.next_line,
                    at = now_ms(),
                    "watcher delivered"
                );
                Ok(())
            }
            // Logged once where it was refused; retrying every poll would only repeat it.
            Err(DeliveryError::TranscriptRefused(_)) => Ok(()),
            Err(e) => Err(e.message()),
        }
    }
}
