//! The accept loop: bounded connections and bounded time per connection.
//!
//! axum's own `serve` has no header-read or idle timeout and no connection cap, so a few
//! thousand half-open connections used to lock everyone out. Here each connection is served by
//! hyper directly, wrapped so that a watchdog knows when it last did something:
//!
//! - idle between requests longer than `idle_timeout`: closed;
//! - no complete request head within `header_timeout` of the connection opening or of the
//!   head's first byte: closed (half-open connections, slowloris);
//! - a request in flight: its handler bounds the body (size and time).
//!
//! At most `max_connections` are open; further clients wait in the kernel's backlog until one
//! closes, which the timeouts above guarantee.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use super::Limits;

/// What the watchdog of one connection knows (milliseconds since the connection opened).
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    /// When the last request finished (or the connection opened).
    idle_since: AtomicU64,
    /// When the first byte after `idle_since` arrived, +1 (0: none yet).
    head_started: AtomicU64,
    /// Requests answered on this connection.
    served: AtomicU64,
}

struct Watched {
    stream: TcpStream,
    opened: Instant,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let out = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before && this.activity.in_flight.load(Ordering::Acquire) == 0 {
            let now = this.opened.elapsed().as_millis() as u64 + 1;
            let _ = this
                .activity
                .head_started
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        }
        out
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Raises the open-files limit to its hard maximum (connections are files) and returns the
/// connection cap that fits under it.
pub fn fit_connection_cap(wanted: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return wanted;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    // Room for the database, logs and the listener itself.
    let fits = (limit.rlim_cur as usize).saturating_sub(128).max(16);
    if fits < wanted {
        tracing::warn!(wanted, fits, "connection cap lowered to fit the open-files limit");
    }
    wanted.min(fits)
}

/// Serves `app` on `listener` until `stop` turns true, then lets open requests finish for up
/// to `limits.shutdown_grace` and drops the rest.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(fit_connection_cap(limits.max_connections)));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: wait a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, stop, limits) = (app.clone(), stop.clone(), limits.clone());
        connections.spawn(async move {
            connection(stream, app, limits, stop).await;
            drop(permit);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("requests still open after the shutdown grace period; dropping them");
        connections.abort_all();
    }
}

async fn connection(stream: TcpStream, app: Router, limits: Limits, mut stop: watch::Receiver<bool>) {
    let opened = Instant::now();
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Watched {
        stream,
        opened,
        activity: activity.clone(),
    });
    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let (app, activity) = (app.clone(), tracked.clone());
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        async move {
            let response = tower::ServiceExt::oneshot(app, request).await;
            activity
                .idle_since
                .store(opened.elapsed().as_millis() as u64, Ordering::Release);
            activity.head_started.store(0, Ordering::Release);
            activity.served.fetch_add(1, Ordering::AcqRel);
            activity.in_flight.fetch_sub(1, Ordering::AcqRel);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let tick = (limits.header_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(tick), if !closing => {
                if activity.in_flight.load(Ordering::Acquire) > 0 {
                    continue;
                }
                let now = opened.elapsed().as_millis() as u64;
                let head = activity.head_started.load(Ordering::Acquire);
                let since = |t: u64| now.saturating_sub(t) as u128;
                let expired = if head > 0 {
                    since(head - 1) > limits.header_timeout.as_millis()
                } else if activity.served.load(Ordering::Acquire) == 0 {
                    // A new connection owes its first request head within the header timeout.
                    since(0) > limits.header_timeout.as_millis()
                } else {
                    since(activity.idle_since.load(Ordering::Acquire)) > limits.idle_timeout.as_millis()
                };
                if expired {
                    tracing::debug!(head_started = head > 0, "closing a connection that timed out");
                    // An idle or half-sent connection has no request to finish: drop it now.
                    return;
                }
            }
        }
    }
}
