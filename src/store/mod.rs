//! The sled store shared by every kcap process of a user (DESIGN.md §3).
//!
//! sled lets one process open a database at a time and fails at once otherwise, while hooks,
//! finalizers, watchers and sweeps run side by side. So each access is short and serialised by a
//! sidecar lock file: lock, open, read/write, flush, close, unlock. Nothing holds the store across
//! a network call.

mod lease;
mod records;

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::ids::SessionId;
use crate::machine::{Input, Millis, Phase, Timings, Watermark};

pub use lease::{Holder, Lease};
pub use records::{LogRecord, MachineMeta, MachineRecord};

/// How long a process waits for another's short hold before giving up. Holds take milliseconds;
/// this bound only matters when something is badly wrong, and then a clear error beats a hang.
const LOCK_WAIT: Duration = Duration::from_secs(20);

const MACHINES: &str = "machines";
const LOG: &str = "log";
const WATERMARKS: &str = "watermarks";
const LEASES: &str = "leases";
const OUTBOX: &str = "outbox";

#[derive(Debug)]
pub enum StoreError {
    Io(std::io::Error),
    Sled(sled::Error),
    Busy(Duration),
    Corrupt(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Io(e) => write!(f, "store I/O error: {e}"),
            StoreError::Sled(e) => write!(f, "store database error: {e}"),
            StoreError::Busy(d) => write!(f, "store lock not obtained within {}s", d.as_secs()),
            StoreError::Corrupt(m) => write!(f, "store record unreadable: {m}"),
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
    fn with<T>(&self, f: impl FnOnce(&sled::Db) -> Result<T>) -> Result<T> {
        std::fs::create_dir_all(&self.home)?;
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
    pub fn record_step(
        &self,
        meta: &MachineMeta,
        input: &Input,
        phase_after: &Phase,
        watermark: Option<Watermark>,
        holder: &Holder,
        at: Millis,
    ) -> Result<u64> {
        self.with(|db| {
            let log = db.open_tree(LOG)?;
            let prefix = records::machine_key(meta.session, meta.generation);
            let seq = match log.scan_prefix(&prefix).next_back() {
                Some(item) => records::seq_of(&item?.0)? + 1,
                None => 0,
            };
            let record = LogRecord {
                seq,
                at,
                input: input.clone(),
                phase: phase_after.clone(),
            };
            log.insert(
                records::log_key(meta.session, meta.generation, seq),
                records::encode(&record)?,
            )?;
            if let Some(w) = watermark {
                advance_watermark(db, meta.session, w)?;
            }
            lease::renew(&db.open_tree(LEASES)?, meta.session, holder, at)?;
            Ok(seq)
        })
    }

    pub fn watermark(&self, session: SessionId) -> Result<Option<Watermark>> {
        self.with(|db| read_watermark(db, session))
    }

    /// Records progress made outside a machine (e.g. after skipping to the server's `last-line`).
    pub fn advance_watermark(&self, session: SessionId, w: Watermark) -> Result<Watermark> {
        self.with(|db| advance_watermark(db, session, w))
    }

    /// Takes the session's finalizer lease unless a live process holds it.
    pub fn acquire_lease(&self, session: SessionId, holder: &Holder, now: Millis) -> Result<LeaseOutcome> {
        self.with(|db| lease::acquire(&db.open_tree(LEASES)?, session, holder, now))
    }

    pub fn release_lease(&self, session: SessionId, holder: &Holder) -> Result<()> {
        self.with(|db| lease::release(&db.open_tree(LEASES)?, session, holder))
    }

    /// Keeps a session-end notice that could not be posted, for the finalizer or the sweep.
    pub fn put_session_end(&self, session: SessionId, payload: &serde_json::Value) -> Result<()> {
        self.with(|db| {
            db.open_tree(OUTBOX)?
                .insert(session.as_bytes(), records::encode(payload)?)?;
            Ok(())
        })
    }

    pub fn pending_session_ends(&self) -> Result<Vec<(SessionId, serde_json::Value)>> {
        self.with(|db| {
            let mut out = Vec::new();
            for item in db.open_tree(OUTBOX)?.iter() {
                let (k, v) = item?;
                let Ok(bytes) = <[u8; 16]>::try_from(k.as_ref()) else {
                    continue;
                };
                out.push((SessionId::from_bytes(bytes), records::decode(&v)?));
            }
            Ok(out)
        })
    }

    /// Removes a delivered notice, unless a newer one replaced it meanwhile.
    pub fn remove_session_end(&self, session: SessionId, delivered: &serde_json::Value) -> Result<()> {
        self.with(|db| {
            let outbox = db.open_tree(OUTBOX)?;
            let expected = records::encode(delivered)?;
            let _ = outbox.compare_and_swap(session.as_bytes(), Some(expected), None as Option<&[u8]>)?;
            Ok(())
        })
    }

    pub fn lease(&self, session: SessionId) -> Result<Option<Lease>> {
        self.with(|db| lease::read(&db.open_tree(LEASES)?, session))
    }
}

/// Opens sled, waiting out its own file lock. The sidecar lock makes us the only opener, but
/// sled's I/O threads can keep the previous holder's file open (and locked) for a moment after
/// its `Db` was dropped, in this process or another.
fn open_db(path: &Path) -> Result<sled::Db> {
    let config = sled::Config::new()
        .path(path)
        // No background flusher thread: it would outlive our hold and keep sled's own lock.
        .flush_every_ms(None);
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
            Err(e) => return Err(e.into()),
        }
    }
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
    let watermark = read_watermark(db, meta.session)?;
    let lease = lease::read(&db.open_tree(LEASES)?, meta.session)?;
    Ok(MachineRecord {
        meta,
        log: records,
        watermark,
        lease,
    })
}

fn read_watermark(db: &sled::Db, session: SessionId) -> Result<Option<Watermark>> {
    match db.open_tree(WATERMARKS)?.get(session.as_bytes())? {
        Some(v) => Ok(Some(records::decode(&v)?)),
        None => Ok(None),
    }
}

/// Watermarks only move forward: a slow process finishing late must not pull it back.
fn advance_watermark(db: &sled::Db, session: SessionId, w: Watermark) -> Result<Watermark> {
    let current = read_watermark(db, session)?;
    match current {
        Some(c) if c.next_line >= w.next_line => Ok(c),
        _ => {
            db.open_tree(WATERMARKS)?
                .insert(session.as_bytes(), records::encode(&w)?)?;
            Ok(w)
        }
    }
}
