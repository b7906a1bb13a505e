//! Lifecycle notices (session-start, notification, session-end) go through a durable queue in
//! the store, so a server that is down when a hook runs still gets them, in order: a session's
//! start and notifications before its lines (the watcher and the finalizer flush them before
//! their first batch), its end after its lines (the finalizer flushes it once it has drained).
//! Within a session, a notice that fails stops the flush: nothing overtakes it. An end that
//! may not go yet (its finalizer has not drained) holds back the session's later ends only:
//! a later run's start still goes before that run's lines.
//!
//! A session's end is posted only while its flusher holds the session's watcher lock: the
//! watcher and a sessionEnd hook's inline drain hold that lock while they post lines, so no
//! batch of theirs (even a redundant one, already delivered by the finalizer) can reach the
//! server after the end. A flusher that finds the lock taken leaves the end queued, unless the
//! holder works for a later run of the session (resumed at once): that run's lines come after
//! this end anyway. Under the same lock, a session's end is posted once per run
//! ([`crate::effects::runs`]): a second one with no line delivered since (a repeated
//! sessionEnd hook) is dropped; one after new lines (the run went on) is posted.

use crate::effects::blocking;
use crate::effects::client::{Client, SendError};
use crate::effects::runs::{self, RunId};
use crate::effects::watcher::{self, LockHolder, Role, WatcherLock};
use crate::ids::SessionId;
use crate::store::{Holder, Notice, NoticeKind, Store};
use std::time::{Duration, Instant};

pub use crate::protocol::NOTIFICATION_PATH;

/// Which notices a flush may deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Those that go before the session's lines: all but its session-ends.
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
    /// A session's end stayed queued because another process still delivers its lines.
    pub busy: bool,
}

/// Whether the caller of a flush already holds the session's watcher lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndLock {
    /// Take it for each session-end, or leave the end queued.
    Take,
    /// The caller holds it (it waited for it).
    Held,
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
    flush_with(store, client, only, which, EndLock::Take).await
}

async fn flush_with(
    store: &Store,
    client: &Client,
    only: Option<SessionId>,
    which: Flush,
    end_lock: EndLock,
) -> Flushed {
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
    // Sessions whose every later notice waits (one failed or is being posted elsewhere).
    let mut stopped: Vec<SessionId> = Vec::new();
    // Sessions whose later ends wait behind one that may not go yet; their starts and
    // notifications still go: an earlier run's end never holds back a later run's start
    // (that run's lines do not wait for it either).
    let mut ends_held: Vec<SessionId> = Vec::new();
    for item in pending {
        if stopped.contains(&item.session) {
            continue;
        }
        if item.notice.kind == NoticeKind::SessionEnd
            && (which == Flush::BeforeLines || ends_held.contains(&item.session))
        {
            ends_held.push(item.session);
            continue;
        }
        // Held until the end is posted: no line of this session is posted meanwhile.
        let _end_guard: Option<WatcherLock> = if item.notice.kind == NoticeKind::SessionEnd
            && end_lock == EndLock::Take
        {
            // Checked after the queue was read: an end is queued only once the machine that
            // delivers its tail is recorded, so a queued end seen here has its machine visible.
            if !machine_done(store, item.session, runs::gen_of_body(&item.notice.body)).await {
                tracing::info!(session = %item.session, "the run's finalizer has not drained; its end stays queued");
                ends_held.push(item.session);
                out.busy = true;
                out.failed
                    .get_or_insert_with(|| "the session's lines are still being delivered".into());
                continue;
            }
            match end_guard(store, item.session, runs::of_body(&item.notice.body)) {
                EndGuard::Locked(lock) => Some(lock),
                EndGuard::Unneeded => None,
                EndGuard::Busy(_) => {
                    tracing::info!(session = %item.session, "the session's lines are still being delivered by another kcap process; its end stays queued");
                    ends_held.push(item.session);
                    out.busy = true;
                    out.failed
                        .get_or_insert_with(|| "the session's lines are still being delivered".into());
                    continue;
                }
            }
        } else {
            None
        };
        let run = runs::of_body(&item.notice.body);
        let from = runs::EndFrom::of_body(&item.notice.body);
        let delivered = match item.notice.kind {
            NoticeKind::SessionEnd => delivered_lines(store, item.session).await,
            _ => None,
        };
        if item.notice.kind == NoticeKind::SessionEnd
            && runs::end_posted(store.home(), item.session, run, delivered, from)
        {
            // A second sessionEnd hook, or a watcher's hand-over end followed by the real one
            // with no line since: the server already has this run's end.
            let (store, session, seq) = (store.clone(), item.session, item.seq);
            if let Err(e) = blocking(move || store.remove_notice(session, seq)).await {
                tracing::warn!(%session, error = %e, "cannot drop the extra session-end");
            }
            tracing::info!(session = %item.session, run, "the run's end is already on the server; this one is dropped (one end per session run)");
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
        match client.post_json(&item.notice.path, &wire(&item.notice)).await {
            Ok(()) => {
                out.delivered += 1;
                if item.notice.kind == NoticeKind::SessionEnd {
                    runs::mark_end_posted(store.home(), item.session, run, delivered, from);
                }
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

/// A notice's body as the server gets it: kcap's own keys are taken out of a session-end (the
/// only notice kcap adds them to); a start or notification goes as the agent sent it, even
/// with a field of the same name.
fn wire(notice: &Notice) -> std::borrow::Cow<'_, serde_json::Value> {
    match notice.kind {
        NoticeKind::SessionEnd => runs::wire_body(&notice.body),
        _ => std::borrow::Cow::Borrowed(&notice.body),
    }
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

/// May a session-end of `run` be posted now, and under which lock.
enum EndGuard {
    /// The session's watcher lock, held while the end is posted.
    Locked(WatcherLock),
    /// No lock is needed: its holder works for a later run (whose lines follow this end
    /// anyway), or no lock can exist (an unwritable home, where no watcher or hook drain can
    /// hold one either).
    Unneeded,
    /// Another process still delivers this run's lines.
    Busy(Option<LockHolder>),
}

fn end_guard(store: &Store, session: SessionId, run: RunId) -> EndGuard {
    match watcher::claim_as(store.home(), session, Role::Drain) {
        Ok(Some(lock)) => EndGuard::Locked(lock),
        Ok(None) => match watcher::holder(store.home(), session) {
            // A holder's run is later than the end's only if the session was started again
            // since: runs are named by their start's time.
            Some(h) if h.run > run => EndGuard::Unneeded,
            h => EndGuard::Busy(h),
        },
        Err(e) => {
            tracing::debug!(error = %e, "no watcher lock for the session-end");
            EndGuard::Unneeded
        }
    }
}

/// Whether the lines before a session-end are known to be on the server: its own finalizer
/// (`generation`, when the end names it) or the session's newest one has drained, or the
/// session never had one. A later run's finalizer still waiting for its shutdown does not hold
/// back an earlier run's end. Unknown (an unreadable store) counts as not.
async fn machine_done(store: &Store, session: SessionId, generation: Option<u32>) -> bool {
    let store = store.clone();
    let done = blocking(move || -> Result<bool, crate::store::StoreError> {
        let Some(latest) = store.latest_machine(session)? else {
            return Ok(true);
        };
        // The newest finalizer drains to the end of the file: every earlier run's lines too.
        if latest.state().0.phase.is_terminal() {
            return Ok(true);
        }
        match generation {
            Some(g) if g < latest.meta.generation => Ok(store
                .machine(session, g)?
                .is_some_and(|m| m.state().0.phase.is_terminal())),
            _ => Ok(false),
        }
    })
    .await;
    match done {
        Ok(done) => done,
        Err(e) => {
            tracing::warn!(%session, error = %e, "cannot read the session's finalizer; its end stays queued");
            false
        }
    }
}

/// How many of the session's lines are delivered (its watermark), `None` if the store cannot
/// say: a session-end is a repeat only if no line was delivered since its run's end was posted.
async fn delivered_lines(store: &Store, session: SessionId) -> Option<u64> {
    let store = store.clone();
    match blocking(move || store.position(session)).await {
        Ok(p) => Some(p.map_or(0, |p| p.watermark.next_line)),
        Err(e) => {
            tracing::warn!(%session, error = %e, "cannot read the session's watermark");
            None
        }
    }
}

/// The run of the first session-end queued for `session` (0 if none or unknown).
async fn first_end_run(store: &Store, session: SessionId) -> RunId {
    let store = store.clone();
    blocking(move || store.pending_notices(Some(session)))
        .await
        .ok()
        .and_then(|pending| {
            pending
                .into_iter()
                .find(|p| p.notice.kind == NoticeKind::SessionEnd)
                .map(|p| runs::of_body(&p.notice.body))
        })
        .unwrap_or(0)
}

/// Posts the session's pending notices, its end included, once no other process delivers its
/// lines: it takes the session's watcher lock (waiting for a watcher's final drain or a hook's
/// inline drain to finish, until `wait` runs out) and holds it while it posts. `direct` is an
/// end that could not be queued (a hook without a usable store handed it over): it is posted
/// after the queued notices. Called by the finalizer once it has drained.
pub async fn deliver_end_after_lines(
    store: &Store,
    client: &Client,
    session: SessionId,
    direct: Option<&serde_json::Value>,
    wait: Duration,
) -> Flushed {
    let deadline = Instant::now() + wait;
    let run = match direct {
        Some(body) => runs::of_body(body),
        None => first_end_run(store, session).await,
    };
    let mut told = false;
    let lock = loop {
        match end_guard(store, session, run) {
            EndGuard::Locked(lock) => break Some(lock),
            EndGuard::Unneeded => break None,
            EndGuard::Busy(_) if Instant::now() < deadline => {
                // A watcher of this run that started just as the sessionEnd hook looked for
                // one was never told to stop: the run has ended, so it is told now (it drains,
                // then leaves). A hook draining inline, or a later run's watcher, is not.
                if !told {
                    told = true;
                    if let Some(pid) = watcher::stop_run(store.home(), session, run) {
                        tracing::info!(pid, "a watcher still ran after the session's end; told to stop");
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await
            }
            EndGuard::Busy(holder) => {
                let pid = holder.map(|h| h.process.pid);
                tracing::warn!(
                    ?pid,
                    "the session's lines are still being delivered by another kcap process; its end waits"
                );
                break None;
            }
        }
    };
    let mut out = if lock.is_some() {
        flush_with(store, client, Some(session), Flush::All, EndLock::Held).await
    } else {
        // Leaves a queued end in place when the lock is busy.
        flush_with(store, client, Some(session), Flush::All, EndLock::Take).await
    };
    let delivered = delivered_lines(store, session).await;
    if let Some(body) = direct.filter(|b| {
        let from = runs::EndFrom::of_body(b);
        !runs::end_posted(store.home(), session, runs::of_body(b), delivered, from)
    }) {
        let path = notice(NoticeKind::SessionEnd, serde_json::Value::Null).path;
        match client.post_json(&path, &runs::wire_body(body)).await {
            Ok(()) => {
                out.delivered += 1;
                let from = runs::EndFrom::of_body(body);
                runs::mark_end_posted(store.home(), session, runs::of_body(body), delivered, from);
                tracing::info!("session-end delivered (handed over by the hook)");
            }
            Err(e) => {
                tracing::error!(error = %e.message(), "session-end not delivered, and no store can keep it");
                out.failed.get_or_insert(e.message());
            }
        }
    }
    drop(lock);
    out
}
