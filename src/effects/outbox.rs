//! Session-end notices the sessionEnd hook could not post: kept in the store, delivered by the
//! finalizer after it drains, and by every `finalize --resume` (the background sweep) after that.

use crate::effects::blocking;
use crate::effects::client::Client;
use crate::ids::SessionId;
use crate::store::Store;

pub const SESSION_END_PATH: &str = "/hooks/session-end/copilot";

/// Posts pending notices (of `only` one session, or all); returns how many were delivered.
pub async fn deliver_session_ends(store: &Store, client: &Client, only: Option<SessionId>) -> usize {
    let pending = {
        let store = store.clone();
        match blocking(move || store.pending_session_ends()).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read pending session-end notices");
                return 0;
            }
        }
    };
    let mut delivered = 0;
    for (session, payload) in pending.into_iter().filter(|(s, _)| only.is_none_or(|o| o == *s)) {
        match client.post_json(SESSION_END_PATH, &payload).await {
            Ok(()) => {
                delivered += 1;
                let store = store.clone();
                if let Err(e) = blocking(move || store.remove_session_end(session, &payload)).await {
                    tracing::warn!(%session, error = %e, "session-end delivered but not cleared; it may be posted again");
                }
                tracing::info!(%session, "pending session-end delivered");
            }
            Err(e) => {
                tracing::warn!(%session, error = %e.message(), "pending session-end still undeliverable")
            }
        }
    }
    delivered
}
