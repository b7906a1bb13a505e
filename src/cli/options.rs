//! Top-level options shared by the commands that deliver. Each is also a config-file key and an
//! environment variable (see [`crate::config::settings`]); the precedence is default < config
//! file < environment < flag, resolved here, so hooks (which get no flags) read the config file
//! for free.
//!
//! clap does not read the environment itself: it would show environment-provided options in
//! usage lines as if they had been typed, and could not tell `kcap config show` where a value
//! came from.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::config::settings::{resolve, setting};
use crate::config::{loaded, Resolved};
use crate::effects::client::Client;
use crate::effects::interpreter::Delivery;
use crate::effects::lines::Limits;
use crate::machine::Timings;

/// The value of setting `key`, with `flag` on top; `None` only for a setting unset everywhere.
fn value(key: &str, flag: Option<String>) -> Resolved {
    let s = setting(key).expect("a known setting");
    resolve(s, flag.as_deref(), loaded())
}

/// A numeric setting; a value that does not parse is skipped by [`resolve`] (and `kcap doctor`
/// and the start-up check in `kcap` report it), because a hook must never fail on it.
fn number(key: &str, flag: Option<u64>) -> u64 {
    let default = || {
        setting(key)
            .and_then(|s| s.default)
            .and_then(|d| d.parse().ok())
            .unwrap_or(0)
    };
    value(key, flag.map(|f| f.to_string()))
        .value
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(default)
}

/// Every setting a value can be wrong in (environment or config file), as messages.
pub fn invalid_settings() -> Vec<String> {
    let mut out = Vec::new();
    for s in crate::config::SETTINGS {
        if let Some(v) = std::env::var(s.env).ok().filter(|v| !v.is_empty()) {
            if let Err(e) = crate::config::settings::validate(s, &v) {
                out.push(format!("{}: {e} (ignored)", s.env));
            }
        }
    }
    out.extend(
        loaded()
            .problems
            .iter()
            .map(|p| format!("{}: {p}", loaded().path.display())),
    );
    out
}

/// Where the server is and how to talk to it.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Delivery (also config keys and environment variables)")]
pub struct DeliveryOpts {
    /// Ingest server base URL [env: KCAP_URL] [config: url] [default: http://127.0.0.1:5108].
    /// Its bearer token comes from KCAP_TOKEN or the config file's `token` (`kcap login`), never
    /// from a flag: command lines are visible to every user.
    #[arg(long, value_name = "URL", value_parser = url_value)]
    pub url: Option<String>,
    /// Per-request HTTP timeout in ms [env: KCAP_HTTP_TIMEOUT_MS] [config: http_timeout_ms]
    /// [default: 30000].
    #[arg(long, value_name = "MS")]
    pub http_timeout_ms: Option<u64>,
    /// Most lines in one delivery batch [env: KCAP_BATCH_LINES] [config: batch_lines] [default:
    /// 1000].
    #[arg(long, value_name = "N")]
    pub batch_lines: Option<u64>,
    /// Most bytes of line content in one batch; a single larger line still goes, alone [env:
    /// KCAP_BATCH_BYTES] [config: batch_bytes] [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub batch_bytes: Option<u64>,
}

impl DeliveryOpts {
    /// The server's base URL (flag, environment, config file, default).
    pub fn url(&self) -> String {
        value("url", self.url.clone())
            .value
            .unwrap_or_else(|| crate::protocol::DEFAULT_URL.to_string())
    }

    /// The bearer token (environment, config file), if any.
    pub fn token(&self) -> Option<String> {
        value("token", None).value
    }

    /// The HTTP client and batch limits these options describe.
    pub fn delivery(&self) -> Result<Delivery, String> {
        Ok(Delivery {
            client: Client::new(
                &self.url(),
                self.token(),
                Duration::from_millis(number("http_timeout_ms", self.http_timeout_ms).max(1)),
            )?,
            limits: Limits {
                max_lines: number("batch_lines", self.batch_lines).max(1) as usize,
                max_bytes: number("batch_bytes", self.batch_bytes).max(1) as usize,
            },
        })
    }

    /// What each delivery option resolved to, for `kcap config show`.
    pub fn flags(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("url", self.url.clone()),
            ("http_timeout_ms", self.http_timeout_ms.map(|v| v.to_string())),
            ("batch_lines", self.batch_lines.map(|v| v.to_string())),
            ("batch_bytes", self.batch_bytes.map(|v| v.to_string())),
        ]
    }
}

/// Timings of a new finalizer; stored with it, so a resumed machine keeps its original ones.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Finalizer timings (also config keys and environment variables)")]
pub struct TimingOpts {
    /// Pause between looks at the transcript's last line, in ms [env: KCAP_POLL_MS] [config:
    /// poll_ms] [default: 300].
    #[arg(long, value_name = "MS")]
    pub poll_ms: Option<u64>,
    /// How long after spawn to wait for `session.shutdown` before draining anyway, in ms [env:
    /// KCAP_SHUTDOWN_BUDGET_MS] [config: shutdown_budget_ms] [default: 45000].
    #[arg(long, value_name = "MS")]
    pub shutdown_budget_ms: Option<u64>,
    /// First delivery retry delay in ms, doubling per failure [env: KCAP_RETRY_INITIAL_MS]
    /// [config: retry_initial_ms] [default: 250].
    #[arg(long, value_name = "MS")]
    pub retry_initial_ms: Option<u64>,
    /// Longest delivery retry delay in ms [env: KCAP_RETRY_MAX_MS] [config: retry_max_ms]
    /// [default: 4000].
    #[arg(long, value_name = "MS")]
    pub retry_max_ms: Option<u64>,
    /// How long delivery may go without progress before the finalizer parks, in ms [env:
    /// KCAP_DELIVERY_BUDGET_MS] [config: delivery_budget_ms] [default: 120000].
    #[arg(long, value_name = "MS")]
    pub delivery_budget_ms: Option<u64>,
    /// Earliest retry of a parked finalizer by the background sweep, in ms [env:
    /// KCAP_PARK_RETRY_MS] [config: park_retry_ms] [default: 60000].
    #[arg(long, value_name = "MS")]
    pub park_retry_ms: Option<u64>,
}

impl TimingOpts {
    /// The finalizer timings these options describe.
    pub fn timings(&self) -> Timings {
        let retry_initial_ms = number("retry_initial_ms", self.retry_initial_ms).max(1);
        Timings {
            poll_ms: number("poll_ms", self.poll_ms).max(1),
            shutdown_budget_ms: number("shutdown_budget_ms", self.shutdown_budget_ms),
            retry_initial_ms,
            retry_max_ms: number("retry_max_ms", self.retry_max_ms).max(retry_initial_ms),
            delivery_budget_ms: number("delivery_budget_ms", self.delivery_budget_ms),
            park_retry_ms: number("park_retry_ms", self.park_retry_ms),
        }
    }

    /// The flags given, by config key, for `kcap config show`.
    pub fn flags(&self) -> Vec<(&'static str, Option<String>)> {
        let s = |v: Option<u64>| v.map(|v| v.to_string());
        vec![
            ("poll_ms", s(self.poll_ms)),
            ("shutdown_budget_ms", s(self.shutdown_budget_ms)),
            ("retry_initial_ms", s(self.retry_initial_ms)),
            ("retry_max_ms", s(self.retry_max_ms)),
            ("delivery_budget_ms", s(self.delivery_budget_ms)),
            ("park_retry_ms", s(self.park_retry_ms)),
        ]
    }
}

/// Where kcap keeps its own files.
#[derive(Debug, Clone, Default, Args)]
pub struct HomeOpts {
    /// Root of kcap's files: store, logs, watcher pid files [env: KCAP_HOME] [config: kcap_home]
    /// [default: $XDG_DATA_HOME/kcap or ~/.local/share/kcap].
    #[arg(long = "kcap-home", value_name = "DIR")]
    pub kcap_home: Option<PathBuf>,
}

impl HomeOpts {
    /// The flag's directory, else [`crate::config::kcap_home`].
    pub fn home(&self) -> PathBuf {
        self.kcap_home.clone().unwrap_or_else(crate::config::kcap_home)
    }
}

/// A numeric per-command setting (`hook_drain_cap_ms`, `watch_poll_ms`): flag, environment,
/// config file, default.
pub fn command_setting(key: &str, flag: Option<u64>) -> u64 {
    number(key, flag)
}

/// A `--url` value: an http:// or https:// URL with a host.
pub fn url_value(text: &str) -> Result<String, String> {
    let s = setting("url").expect("url is a setting");
    crate::config::settings::validate(s, text).map(|()| text.to_string())
}

/// `host:port` where the host may be a name (`localhost:5108`): the first address it resolves
/// to. Used for `kcap serve --addr`.
pub fn socket_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("{text:?} is not host:port ({e})"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::socket_addr;

    #[test]
    fn addresses_take_host_names() {
        assert_eq!(socket_addr("127.0.0.1:5108").unwrap().port(), 5108);
        assert!(socket_addr("localhost:5108").unwrap().ip().is_loopback());
        assert!(socket_addr("localhost").unwrap_err().contains("host:port"));
    }
}
