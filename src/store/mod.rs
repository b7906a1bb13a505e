//! The sled store shared by every kcap process of a user (docs/architecture.md, "Client store").
//!
//! sled lets one process open a database at a time and fails at once otherwise, while hooks,
//! finalizers, watchers and sweeps run side by side. So each access is short and serialised by a
//! sidecar lock file: lock, open, read/write, flush, close, unlock. Nothing holds the store across
//! a network call.

mod health;
mod lease;
mod records;

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::ids::SessionId;
use crate::machine::{Millis, Timings, Watermark};

pub use lease::{Holder, Lease};
pub use records::{
    LogRecord, MachineMeta, MachineRecord, Notice, NoticeKind, PendingNotice, Position, Step, FORMAT,
};

/// Device and inode of a transcript: which file a position refers to.
pub type Identity = (u64, u64);

/// How long a process waits for another's short hold before giving up. Holds take milliseconds;
/// this bound only matters when something is badly wrong, and then a clear error beats a hang.
const LOCK_WAIT: Duration = Duration::from_secs(20);

const MACHINES: &str = "machines";
const LOG: &str = "log";
const WATERMARKS: &str = "watermarks";
const LEASES: &str = "leases";
const NOTICES: &str = "notices";
const LEGACY_OUTBOX: &str = "outbox";

#[derive(Debug)]
pub enum StoreError {
    Io(std::io::Error),
    Sled(sled::Error),
    Busy(Duration),
    Corrupt(String),
    /// The filesystem is (nearly) full: the store is left untouched rather than written half.
    Full {
        home: PathBuf,
        free: u64,
    },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Io(e) => write!(f, "store I/O error: {e}"),
            StoreError::Sled(e) => write!(f, "store database error: {e}"),
            StoreError::Busy(d) => write!(f, "store lock not obtained within {}s", d.as_secs()),
            StoreError::Corrupt(m) => write!(f, "store record unreadable: {m}"),
            StoreError::Full { home, free } => write!(
                f,
                "the filesystem holding {} is full ({free} bytes free); the store is not touched until there is room",
                home.display()
            ),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e)
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Sled(e)
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Handle on the store under `home`; cheap to clone, holds nothing open.
#[derive(Clone, Debug)]
pub struct Store {
    home: PathBuf,
}

/// Outcome of asking for the one-finalizer-per-session lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    Acquired,
    HeldBy(Lease),
}

impl Store {
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Store { home: home.into() }
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Runs `f` with the database open and exclusively ours, then flushes and closes it.
    ///
    /// On a (nearly) full filesystem it does not open sled at all: sled writes while it opens
    /// and recovers, and a write that ENOSPC cuts short is what left stores unreadable.
    fn with<T>(&self, f: impl FnOnce(&sled::Db) -> Result<T>) -> Result<T> {
        std::fs::create_dir_all(&self.home)?;
        if let Some(free) = health::free_bytes(&self.home) {
            if free < health::MIN_FREE_BYTES {
                return Err(StoreError::Full {
                    home: self.home.clone(),
                    free,
                });
            }
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.home.join("store.lock"))?;
        wait_for_lock(&lock)?;
        let db = open_db(&self.home.join("store"))?;
        let result = f(&db);
        let flushed = db.flush();
        drop(db);
        drop(lock);
        let value = result?;
        flushed?;
        Ok(value)
    }

    /// Records a new finalizer machine for `session` (a new generation: a session that was resumed
    /// and ended again gets a machine of its own). Returns its generation.
    pub fn spawn_machine(
        &self,
        session: SessionId,
        transcript: &Path,
        timings: Timings,
        at: Millis,
    ) -> Result<u32> {
        self.with(|db| {
            let machines = db.open_tree(MACHINES)?;
            let generation = match latest_key(&machines, session.as_bytes())? {
                Some(key) => records::generation_of(&key)? + 1,
                None => 0,
            };
            let meta = MachineMeta {
                session,
                generation,
                transcript: transcript.to_path_buf(),
                timings,
                spawned_at: at,
            };
            machines.insert(records::machine_key(session, generation), records::encode(&meta)?)?;
            Ok(generation)
        })
    }

    /// The newest machine of `session` with its whole transition log.
    pub fn latest_machine(&self, session: SessionId) -> Result<Option<MachineRecord>> {
        self.with(|db| {
            let machines = db.open_tree(MACHINES)?;
            match latest_key(&machines, session.as_bytes())? {
                Some(key) => {
                    let meta: MachineMeta = records::decode(&machines.get(&key)?.unwrap_or_default())?;
                    Ok(Some(load_log(db, meta)?))
                }
                None => Ok(None),
            }
        })
    }

    /// The machine of `session`'s `generation` with its whole transition log.
    pub fn machine(&self, session: SessionId, generation: u32) -> Result<Option<MachineRecord>> {
        self.with(|db| {
            let machines = db.open_tree(MACHINES)?;
            match machines.get(records::machine_key(session, generation))? {
                Some(value) => Ok(Some(load_log(db, records::decode(&value)?)?)),
                None => Ok(None),
            }
        })
    }

    /// The newest machine of every session, oldest session first.
    pub fn all_latest_machines(&self) -> Result<Vec<MachineRecord>> {
        self.with(|db| {
            let machines = db.open_tree(MACHINES)?;
            let mut latest: Vec<MachineMeta> = Vec::new();
            for item in machines.iter() {
                let (_, value) = item?;
                let meta: MachineMeta = records::decode(&value)?;
                match latest.last_mut() {
                    Some(last) if last.session == meta.session => *last = meta,
                    _ => latest.push(meta),
                }
            }
            latest.sort_by_key(|m| m.spawned_at);
            latest.into_iter().map(|meta| load_log(db, meta)).collect()
        })
    }

    /// Appends one accepted transition, persists the watermark it carries (if any) and renews the
    /// holder's lease, in a single short hold.
    pub fn record_step(&self, step: &Step) -> Result<u64> {
        self.with(|db| {
            let log = db.open_tree(LOG)?;
            let prefix = records::machine_key(step.session, step.generation);
            let seq = match log.scan_prefix(&prefix).next_back() {
                Some(item) => records::seq_of(&item?.0)? + 1,
                None => 0,
            };
            let record = LogRecord {
                seq,
                at: step.at,
                input: step.input.clone(),
                phase: step.phase_after.clone(),
            };
            log.insert(
                records::log_key(step.session, step.generation, seq),
                records::encode(&record)?,
            )?;
            if let Some(w) = step.watermark {
                advance_position(db, step.session, w, step.identity)?;
            }
            lease::renew(&db.open_tree(LEASES)?, step.session, &step.holder, step.at)?;
            Ok(seq)
        })
    }

    pub fn watermark(&self, session: SessionId) -> Result<Option<Watermark>> {
        self.with(|db| Ok(read_position(db, session)?.map(|p| p.watermark)))
    }

    /// The delivered position and the file (device, inode) it refers to, when known.
    pub fn position(&self, session: SessionId) -> Result<Option<Position>> {
        self.with(|db| read_position(db, session))
    }

    /// Records progress made outside a machine (the watcher, import, a skip to the server's
    /// `last-line`). `identity` is the file the position refers to.
    pub fn advance_watermark(
        &self,
        session: SessionId,
        w: Watermark,
        identity: Option<Identity>,
    ) -> Result<Position> {
        self.with(|db| advance_position(db, session, w, identity))
    }

    /// Takes the session's finalizer lease unless a live process holds it.
    pub fn acquire_lease(&self, session: SessionId, holder: &Holder, now: Millis) -> Result<LeaseOutcome> {
        self.with(|db| lease::acquire(&db.open_tree(LEASES)?, session, holder, now))
    }

    pub fn release_lease(&self, session: SessionId, holder: &Holder) -> Result<()> {
        self.with(|db| lease::release(&db.open_tree(LEASES)?, session, holder))
    }

    /// Queues a lifecycle notice for delivery in order (DESIGN: start before lines before
    /// end). A session-end replaces one still pending for the same session (one end per
    /// session); other notices queue up. Returns the notice's sequence number.
    pub fn queue_notice(&self, session: SessionId, notice: &Notice) -> Result<u64> {
        self.with(|db| insert_notice(&notices_tree(db)?, session, notice))
    }

    /// Queues a session-end that yields to the real end of its own run already queued (one from
    /// the agent's hook, not a watcher's interim end, which it replaces): that one
    /// stays, in its place (it is the run's real end, with its reason), and takes this one's
    /// finalizer generation (`runs::GEN_KEY`) if that is the newer, so it still waits for the
    /// newest finalizer's drain. With none queued, `notice` is queued as [`Store::queue_notice`]
    /// does. One store access: an end of the run queued by another process (a sessionEnd
    /// hook, which queues without the watcher lock) lands either before this, and stays, or
    /// after, and replaces this one. Returns whether a queued end was kept.
    pub fn queue_end_yielding(&self, session: SessionId, notice: &Notice) -> Result<bool> {
        use crate::effects::runs::{EndFrom, GEN_KEY, RUN_KEY};
        self.with(|db| {
            let tree = notices_tree(db)?;
            let run = notice.body.get(RUN_KEY);
            for item in tree.scan_prefix(session.as_bytes()) {
                let (key, value) = item?;
                let mut queued = records::decode::<Notice>(&value)?;
                // Only the agent's real end is kept; a watcher's interim end (an `idle` or
                // `stopped` one held back by a down server) is replaced, like any repeat.
                if queued.kind == NoticeKind::SessionEnd
                    && queued.body.get(RUN_KEY) == run
                    && EndFrom::of_body(&queued.body) == EndFrom::Hook
                {
                    // The newer finalizer of the two: the hand-off may have recorded its
                    // finalizer before the hook's and queue after it; moved to the older one,
                    // the end could go before the hook's finalizer delivered the shutdown line.
                    let ours = notice.body.get(GEN_KEY).and_then(serde_json::Value::as_u64);
                    let kept = queued.body.get(GEN_KEY).and_then(serde_json::Value::as_u64);
                    if let (Some(ours), Some(map)) = (ours, queued.body.as_object_mut()) {
                        if kept.is_none_or(|kept| kept < ours) {
                            map.insert(GEN_KEY.into(), ours.into());
                        }
                    }
                    tree.insert(key, records::encode(&queued)?)?;
                    return Ok(true);
                }
            }
            insert_notice(&tree, session, notice).map(|_| false)
        })
    }

    /// Pending notices (of `only` one session, or all), in delivery order per session.
    pub fn pending_notices(&self, only: Option<SessionId>) -> Result<Vec<PendingNotice>> {
        self.with(|db| {
            let tree = notices_tree(db)?;
            let items = match only {
                Some(s) => tree.scan_prefix(s.as_bytes()),
                None => tree.scan_prefix([]),
            };
            let mut out = Vec::new();
            for item in items {
                let (key, value) = item?;
                let Some(session) = key.get(..16).and_then(|k| <[u8; 16]>::try_from(k).ok()) else {
                    continue;
                };
                out.push(PendingNotice {
                    session: SessionId::from_bytes(session),
                    seq: records::notice_seq(&key)?,
                    notice: records::decode(&value)?,
                });
            }
            Ok(out)
        })
    }

    /// Claims a pending notice for `holder` to post: `false` when it is gone (delivered) or
    /// another live process is posting it. `release` gives a claim back (a failed post).
    pub fn claim_notice(&self, session: SessionId, seq: u64, holder: &Holder, release: bool) -> Result<bool> {
        self.with(|db| {
            let tree = notices_tree(db)?;
            let key = records::notice_key(session, seq);
            let Some(value) = tree.get(&key)? else {
                return Ok(false);
            };
            let mut notice: Notice = records::decode(&value)?;
            if release {
                if notice.claimed_by == Some(*holder) {
                    notice.claimed_by = None;
                    tree.insert(key, records::encode(&notice)?)?;
                }
                return Ok(true);
            }
            match notice.claimed_by {
                Some(other) if other != *holder && other.is_alive() => Ok(false),
                _ => {
                    notice.claimed_by = Some(*holder);
                    tree.insert(key, records::encode(&notice)?)?;
                    Ok(true)
                }
            }
        })
    }

    /// Removes a delivered notice.
    pub fn remove_notice(&self, session: SessionId, seq: u64) -> Result<()> {
        self.with(|db| {
            notices_tree(db)?.remove(records::notice_key(session, seq))?;
            Ok(())
        })
    }

    /// Session-end notices still waiting, with their bodies.
    pub fn pending_session_ends(&self) -> Result<Vec<(SessionId, serde_json::Value)>> {
        Ok(self
            .pending_notices(None)?
            .into_iter()
            .filter(|p| p.notice.kind == NoticeKind::SessionEnd)
            .map(|p| (p.session, p.notice.body))
            .collect())
    }

    pub fn lease(&self, session: SessionId) -> Result<Option<Lease>> {
        self.with(|db| lease::read(&db.open_tree(LEASES)?, session))
    }
}

/// Queues `notice` last in its session's queue; a session-end first removes one of the same
/// run still queued. Returns its sequence number.
fn insert_notice(tree: &sled::Tree, session: SessionId, notice: &Notice) -> Result<u64> {
    if notice.kind == NoticeKind::SessionEnd {
        // A repeated end of the same run replaces the queued one; another run's end
        // is that run's only end and stays (capture: a session resumed at once).
        let run = notice.body.get(crate::effects::runs::RUN_KEY);
        for item in tree.scan_prefix(session.as_bytes()) {
            let (key, value) = item?;
            let queued = records::decode::<Notice>(&value)?;
            if queued.kind == NoticeKind::SessionEnd && queued.body.get(crate::effects::runs::RUN_KEY) == run
            {
                tree.remove(key)?;
            }
        }
    }
    let seq = match tree.scan_prefix(session.as_bytes()).keys().next_back() {
        Some(key) => records::notice_seq(&key?)? + 1,
        None => 0,
    };
    tree.insert(records::notice_key(session, seq), records::encode(notice)?)?;
    Ok(seq)
}

/// The notices tree, with session-end notices a previous version kept in its `outbox` tree
/// (one per session, keyed by the session alone) moved in first.
fn notices_tree(db: &sled::Db) -> Result<sled::Tree> {
    let tree = db.open_tree(NOTICES)?;
    let legacy = db.open_tree(LEGACY_OUTBOX)?;
    for item in legacy.iter() {
        let (key, value) = item?;
        if let Ok(bytes) = <[u8; 16]>::try_from(key.as_ref()) {
            let session = SessionId::from_bytes(bytes);
            let notice = Notice {
                kind: NoticeKind::SessionEnd,
                // That version captured the default agent only.
                path: crate::protocol::session_end_path(crate::agent::default().name()),
                // A hook's own payload, not a kcap record: no format of ours to check.
                body: serde_json::from_slice(&value).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                claimed_by: None,
            };
            let seq = match tree.scan_prefix(session.as_bytes()).keys().next_back() {
                Some(key) => records::notice_seq(&key?)? + 1,
                None => 0,
            };
            tree.insert(records::notice_key(session, seq), records::encode(&notice)?)?;
        }
        legacy.remove(key)?;
    }
    Ok(tree)
}

/// Opens sled, waiting out its own file lock. The sidecar lock makes us the only opener, but
/// sled's I/O threads can keep the previous holder's file open (and locked) for a moment after
/// its `Db` was dropped, in this process or another.
fn open_db(path: &Path) -> Result<sled::Db> {
    let config = sled::Config::new()
        .path(path)
        // No background flusher thread: it would outlive our hold and keep sled's own lock.
        .flush_every_ms(None);
    discard_unfinished_snapshots(path)?;
    let started = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Err(e @ (sled::Error::Corruption { .. } | sled::Error::ReportableBug(_))) => {
                return rebuild(path, &config, &e);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Removes the snapshot a killed process left half written (`snap.<lsn>.generating`).
///
/// sled 0.34 writes each snapshot (it writes one on every open) to that name, then renames it.
/// Its reader takes the highest `snap.*` name, the unfinished one included, and calls the whole
/// store corrupt. A kill -9 during an open is routine for a finalizer, so such a file is no
/// evidence of damage: the finished snapshot beside it and the log still hold every record.
/// Safe only under the sidecar lock (nobody else can be writing one).
fn discard_unfinished_snapshots(path: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %entry.path().display(), "removing a snapshot a killed kcap left unfinished");
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// A store sled reports as corrupt (a write cut short by a full disk, a crash of the disk
/// itself) is moved aside, not deleted, and a fresh one takes its place: every deliverer
/// resumes from the server's `last-line`, and the ids keep a line sent twice stored once. What
/// is lost is local bookkeeping only: machines and notices not yet delivered; the next
/// `kcap import` delivers whatever lines the server lacks.
fn rebuild(path: &Path, config: &sled::Config, error: &sled::Error) -> Result<sled::Db> {
    let aside = path.with_file_name(format!("store.corrupt-{}", crate::config::now_ms()));
    tracing::error!(
        store = %path.display(),
        moved_to = %aside.display(),
        %error,
        "the store is corrupt; moved aside and rebuilt empty (resume points come from the server)"
    );
    std::fs::rename(path, &aside)?;
    Ok(config.open()?)
}

fn wait_for_lock(lock: &File) -> Result<()> {
    let started = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Err(TryLockError::WouldBlock) => return Err(StoreError::Busy(LOCK_WAIT)),
            Err(TryLockError::Error(e)) => return Err(e.into()),
        }
    }
}

fn latest_key(tree: &sled::Tree, prefix: &[u8]) -> Result<Option<sled::IVec>> {
    Ok(tree.scan_prefix(prefix).keys().next_back().transpose()?)
}

fn load_log(db: &sled::Db, meta: MachineMeta) -> Result<MachineRecord> {
    let log = db.open_tree(LOG)?;
    let mut records = Vec::new();
    for item in log.scan_prefix(records::machine_key(meta.session, meta.generation)) {
        records.push(records::decode::<LogRecord>(&item?.1)?);
    }
    let position = read_position(db, meta.session)?;
    let lease = lease::read(&db.open_tree(LEASES)?, meta.session)?;
    Ok(MachineRecord {
        meta,
        log: records,
        watermark: position.map(|p| p.watermark),
        identity: position.and_then(|p| p.identity),
        lease,
    })
}

fn read_position(db: &sled::Db, session: SessionId) -> Result<Option<Position>> {
    match db.open_tree(WATERMARKS)?.get(session.as_bytes())? {
        Some(v) => Ok(Some(records::decode(&v)?)),
        None => Ok(None),
    }
}

/// Records `w` by the one rule of [`Position::advanced`].
fn advance_position(
    db: &sled::Db,
    session: SessionId,
    w: Watermark,
    identity: Option<Identity>,
) -> Result<Position> {
    let (position, changed) = Position::advanced(read_position(db, session)?, w, identity);
    if changed {
        db.open_tree(WATERMARKS)?
            .insert(session.as_bytes(), records::encode(&position)?)?;
    }
    Ok(position)
}
