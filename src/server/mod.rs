//! The ingest server: the kcap protocol (docs/architecture.md) over a [`Storage`] backend (SQLite by
//! default, PostgreSQL for teams), each line once by event id, every request bounded in time,
//! size and concurrency. `kcap serve` runs it; the demo, the tests and the benchmarks run it on
//! a temporary SQLite store. Scripted faults let tests play a server that is slow, failing or
//! hanging.

pub mod auth;
pub mod body;
pub mod handlers;
pub mod heap;
pub mod host;
pub mod listener;
pub mod storage;
pub mod usage;
pub mod web;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

use crate::ids::SessionId;
pub use storage::{SessionLines, SessionSummary, Storage, StoredLine};

/// The server's bounds; `kcap serve --help` documents each flag.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A started request head must be complete within this.
    pub header_timeout: Duration,
    /// A request body must be complete within this, plus a second per MiB received (see
    /// [`body::MIN_BODY_RATE`]).
    pub body_timeout: Duration,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Open connections at most; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Batches of at most [`body::STREAM_ABOVE`] bytes read and stored at once at most.
    pub max_ingest: usize,
    /// Bytes that transcript bodies may hold at once, all together: each reserves its declared
    /// length before it is read on (see [`body::stream_into`]), which bounds the memory of bodies.
    pub large_body_budget: u64,
    /// How long a batch may wait for an ingest slot before a 503 (the client retries).
    pub ingest_queue_timeout: Duration,
    /// Largest transcript batch body, in bytes (413 above: the client splits its batch).
    pub max_body: u64,
    /// Largest lifecycle hook body, in bytes.
    pub max_hook_body: usize,
    /// How long SIGTERM waits for open requests.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_ingest: 8,
            large_body_budget: 256 * 1024 * 1024,
            ingest_queue_timeout: Duration::from_secs(30),
            max_body: 256 * 1024 * 1024,
            max_hook_body: 1024 * 1024,
            shutdown_grace: Duration::from_secs(4),
        }
    }
}

/// How to run a server.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Admin bearer token (`--token`); named tokens live in the database.
    pub token: Option<String>,
    pub limits: Limits,
    /// Host names the server answers besides loopback names and IP literals (see [`host`]).
    pub allowed_hosts: Vec<String>,
}

/// A scripted misbehaviour, consumed by the next protocol request (not `/auth/config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Status(u16),
    Delay(Duration),
    /// Never answers (the client's timeout must fire).
    Hang,
}

/// State every handler shares.
pub struct Shared {
    storage: Storage,
    gate: auth::Gate,
    limits: Limits,
    ingest_slots: Arc<Semaphore>,
    /// How transcript bodies are read: limits, the shared body budget (see [`body::Reading`]).
    bodies: body::Reading,
    faults: Mutex<VecDeque<Fault>>,
    requests: Mutex<u64>,
    first_request_at: Mutex<Option<crate::machine::Millis>>,
    /// Wakes the web UI's live streams and search indexer when lines are stored.
    live: web::live::LiveHub,
    hosts: host::HostGuard,
}

/// A running server; dropping it stops it.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Serves on `addr` (port 0 picks a free one) with a temporary store, until stopped. The
    /// body limit is the sled-era server's 32 MiB (the demo and tests exercise the client's
    /// 413 paths against it); `kcap serve` defaults to [`Limits::default`].
    pub async fn start(addr: SocketAddr, token: Option<String>) -> std::io::Result<Server> {
        let limits = Limits {
            max_body: 32 * 1024 * 1024,
            ..Limits::default()
        };
        Self::start_with_limits(addr, token, limits).await
    }

    /// Like [`Server::start`], with the given limits.
    pub async fn start_with_limits(
        addr: SocketAddr,
        token: Option<String>,
        limits: Limits,
    ) -> std::io::Result<Server> {
        let storage = Storage::temporary().map_err(std::io::Error::other)?;
        Self::start_with(
            addr,
            Options {
                token,
                limits,
                ..Options::default()
            },
            storage,
        )
        .await
    }

    /// Serves `storage` on `addr`.
    pub async fn start_with(addr: SocketAddr, options: Options, storage: Storage) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let limits = options.limits;
        let shared = Arc::new(Shared {
            storage,
            gate: auth::Gate::new(options.token),
            ingest_slots: Arc::new(Semaphore::new(limits.max_ingest.max(1))),
            bodies: body::Reading::new(&limits),
            limits: limits.clone(),
            faults: Mutex::new(VecDeque::new()),
            requests: Mutex::new(0),
            first_request_at: Mutex::new(None),
            live: web::live::LiveHub::new(),
            hosts: host::HostGuard::new(addr, &options.allowed_hosts),
        });
        let app = handlers::router(shared.clone());
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(web::indexer::run(
            shared.storage.reads(),
            shared.live.clone(),
            stopped.clone(),
        ));
        let task = tokio::spawn(listener::serve(listener, app, limits, stopped));
        Ok(Server {
            addr,
            shared,
            stop,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn storage(&self) -> &Storage {
        &self.shared.storage
    }

    /// The web page of a session.
    pub fn session_url(&self, session: SessionId) -> String {
        format!("{}{}", self.url(), web::paths::session(session))
    }

    /// Queues faults for the next requests, in order.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.shared.faults).extend(faults);
    }

    pub fn pending_faults(&self) -> usize {
        lock(&self.shared.faults).len()
    }

    /// Everything stored for `session` (an empty view if the store cannot be read).
    pub fn session(&self, session: SessionId) -> SessionLines {
        self.shared
            .storage
            .run_detached(|b| b.lines(session))
            .unwrap_or_default()
    }

    pub fn sessions(&self) -> Vec<SessionId> {
        self.shared
            .storage
            .run_detached(|b| b.session_ids())
            .unwrap_or_default()
    }

    /// Whether a transcript request is being received or stored right now (the search indexer
    /// gives way meanwhile).
    pub fn ingesting(&self) -> bool {
        self.shared.live.busy()
    }

    /// Protocol requests answered so far (faulted ones included).
    pub fn requests(&self) -> u64 {
        *lock(&self.shared.requests)
    }

    /// When the first protocol request arrived (epoch ms), if any did.
    pub fn first_request_at(&self) -> Option<crate::machine::Millis> {
        *lock(&self.shared.first_request_at)
    }

    /// Stops accepting and lets open requests finish (up to the shutdown grace). Every
    /// acknowledged batch was already committed, so there is nothing to flush.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // These hold a fault queue and a counter: a panic elsewhere cannot leave them inconsistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
