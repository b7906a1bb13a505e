//! The interpreter and everything that touches the world: files, the network, processes.

pub mod agent;
pub mod client;
pub mod delivery;
pub mod detach;
pub mod follow;
pub mod interpreter;
pub mod lines;
pub mod open;
pub mod outbox;
/// Redaction moved to [`crate::redact`] (a pure text transform); re-exported so callers that
/// still name `effects::redact` keep building until every branch has moved.
pub use crate::redact;
pub mod runs;
pub mod session;
pub mod tail;
pub mod watcher;

/// Runs blocking file or store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
