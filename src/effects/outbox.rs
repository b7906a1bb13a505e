//! Lifecycle notices (session-start, notification, session-end) go through a durable queue in
//! the store, so a server that is down when a hook runs still gets them, in order: a session's
//! start and notifications before its lines (the watcher and the finalizer flush them before
//! their first batch), its end after its lines (the finalizer flushes it once it has drained).
//! Within a session, a notice that fails stops the flush: nothing overtakes it.

use crate::effects::blocking;
use crate::effects::client::{Client, SendError};
use crate::ids::SessionId;
use crate::store::{Holder, Notice, NoticeKind, Store};

pub use crate::protocol::NOTIFICATION_PATH;

/// Which notices a flush may deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Those that go before the session's lines: up to its first pending session-end.
    BeforeLines,
    /// Everything: the session's lines are delivered.
    All,
}

/// The outcome of a flush.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flushed {
    pub delivered: usize,
    /// The first failure, if one stopped a session's queue.
    pub failed: Option<String>,
}

/// A notice for `kind` with `body`, posted to its protocol path.
pub fn notice(kind: NoticeKind, body: serde_json::Value) -> Notice {
    // The vendor in the path is the one every batch names (`Client::encode_batch`).
    let vendor = crate::agent::default().name();
    let path = match kind {
        NoticeKind::SessionStart => crate::protocol::session_start_path(vendor),
        NoticeKind::Notification => NOTIFICATION_PATH.into(),
        NoticeKind::SessionEnd => crate::protocol::session_end_path(vendor),
    };
    Notice {
        kind,
        path,
        body,
        claimed_by: None,
    }
}

/// Posts the pending notices of `only` one session (or of all) that `which` allows, in order.
pub async fn flush(store: &Store, client: &Client, only: Option<SessionId>, which: Flush) -> Flushed {
    let pending = {
        let store = store.clone();
        match blocking(move || store.pending_notices(only)).await {
            Ok(p) => p,
            Err(e) => {
                // Nothing can be known to be pending, and lines must not wait on a broken store
                // (a full disk): delivery goes on.
                tracing::warn!(error = %e, "cannot read pending lifecycle notices; going on without them");
                return Flushed::default();
            }
        }
    };
    let mut out = Flushed::default();
    let mut stopped: Vec<SessionId> = Vec::new();
    for item in pending {
        if stopped.contains(&item.session) {
            continue;
        }
        if which == Flush::BeforeLines && item.notice.kind == NoticeKind::SessionEnd {
            stopped.push(item.session);
            continue;
        }
        // Claimed first, so two flushers (a hook and the sweep) never post one notice twice.
        let (claim_store, session, seq) = (store.clone(), item.session, item.seq);
        let me = Holder::current();
        match blocking(move || claim_store.claim_notice(session, seq, &me, false)).await {
            Ok(true) => {}
            Ok(false) => {
                // Delivered meanwhile, or being posted by another live process: what follows
                // in this session waits for it.
                stopped.push(item.session);
                if which == Flush::BeforeLines {
                    out.failed
                        .get_or_insert_with(|| "being delivered by another kcap process".into());
                }
                continue;
            }
            Err(e) => tracing::warn!(error = %e, "cannot claim the notice; posting it anyway"),
        }
        match client.post_json(&item.notice.path, &item.notice.body).await {
            Ok(()) => {
                out.delivered += 1;
                let (store, session, seq) = (store.clone(), item.session, item.seq);
                if let Err(e) = blocking(move || store.remove_notice(session, seq)).await {
                    tracing::warn!(%session, error = %e, "notice delivered but not cleared; it may be posted again");
                }
                tracing::info!(session = %item.session, path = %item.notice.path, "pending notice delivered");
            }
            Err(e) if refused_for_good(&e) => {
                // Kept, it would hold the session's lines back for ever (they wait for their
                // start): the server will never take this notice, so it is dropped, loudly.
                let (store, session, seq) = (store.clone(), item.session, item.seq);
                if let Err(e) = blocking(move || store.remove_notice(session, seq)).await {
                    tracing::warn!(%session, error = %e, "cannot drop the refused notice");
                }
                tracing::error!(session = %item.session, path = %item.notice.path, error = %e.message(),
                    "the server refuses this notice for good; dropped so the session's lines are not held back");
            }
            Err(e) => {
                let (store, session, seq) = (store.clone(), item.session, item.seq);
                let _ = blocking(move || store.claim_notice(session, seq, &me, true)).await;
                tracing::warn!(session = %item.session, path = %item.notice.path, error = %e.message(), "notice still undeliverable; kept, in order");
                out.failed.get_or_insert(e.message());
                stopped.push(item.session);
            }
        }
    }
    out
}

/// A refusal of this notice itself (400, 404, 413, 422, ...), which no retry can change; not
/// one of the credentials (401, 403), which the user can fix and which holds the lines back too.
fn refused_for_good(e: &SendError) -> bool {
    match e {
        SendError::TooLarge => true,
        SendError::Refused(m) => !(m.starts_with("HTTP 401") || m.starts_with("HTTP 403")),
        SendError::Retryable(_) => false,
    }
}

/// Posts pending session-end notices (and anything queued before them) of `only` one session,
/// or of all; returns how many notices were delivered.
pub async fn deliver_session_ends(store: &Store, client: &Client, only: Option<SessionId>) -> usize {
    flush(store, client, only, Flush::All).await.delivered
}
