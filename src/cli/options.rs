//! Options shared by the commands that deliver; every one can also come from the environment so
//! that hooks and tests can steer processes they do not start by hand.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::effects::client::Client;
use crate::effects::interpreter::Delivery;
use crate::effects::lines::Limits;
use crate::machine::Timings;
use crate::protocol::DEFAULT_URL;

#[derive(Debug, Clone, Args)]
pub struct DeliveryOpts {
    /// Ingest server base URL. A bearer token, if the server needs one, is read from KCAP_TOKEN.
    #[arg(long, env = "KCAP_URL", default_value = DEFAULT_URL, global = true)]
    pub url: String,
    /// Per-request HTTP timeout.
    #[arg(long, env = "KCAP_HTTP_TIMEOUT_MS", default_value_t = 30_000, global = true)]
    pub http_timeout_ms: u64,
    /// Most lines in one delivery batch.
    #[arg(long, env = "KCAP_BATCH_LINES", default_value_t = 1_000, global = true)]
    pub batch_lines: usize,
    /// Most bytes of line content in one batch (a single larger line still goes, alone).
    #[arg(long, env = "KCAP_BATCH_BYTES", default_value_t = 4 * 1024 * 1024, global = true)]
    pub batch_bytes: usize,
}

impl DeliveryOpts {
    pub fn delivery(&self) -> Result<Delivery, String> {
        let token = std::env::var("KCAP_TOKEN").ok().filter(|t| !t.is_empty());
        Ok(Delivery {
            client: Client::new(
                &self.url,
                token,
                Duration::from_millis(self.http_timeout_ms.max(1)),
            )?,
            limits: Limits {
                max_lines: self.batch_lines.max(1),
                max_bytes: self.batch_bytes.max(1),
            },
        })
    }
}

/// Timings of a new finalizer; stored with it, so a resumed machine keeps its original ones.
#[derive(Debug, Clone, Args)]
pub struct TimingOpts {
    /// Pause between looks at the transcript's last line.
    #[arg(long, env = "KCAP_POLL_MS", default_value_t = Timings::default().poll_ms, global = true)]
    pub poll_ms: u64,
    /// How long after spawn to wait for `session.shutdown` before draining anyway.
    #[arg(long, env = "KCAP_SHUTDOWN_BUDGET_MS", default_value_t = Timings::default().shutdown_budget_ms, global = true)]
    pub shutdown_budget_ms: u64,
    /// First delivery retry delay (doubles per failure).
    #[arg(long, env = "KCAP_RETRY_INITIAL_MS", default_value_t = Timings::default().retry_initial_ms, global = true)]
    pub retry_initial_ms: u64,
    /// Longest delivery retry delay.
    #[arg(long, env = "KCAP_RETRY_MAX_MS", default_value_t = Timings::default().retry_max_ms, global = true)]
    pub retry_max_ms: u64,
    /// How long delivery may go without progress before the machine parks.
    #[arg(long, env = "KCAP_DELIVERY_BUDGET_MS", default_value_t = Timings::default().delivery_budget_ms, global = true)]
    pub delivery_budget_ms: u64,
    /// Earliest retry of a parked machine by the background sweep.
    #[arg(long, env = "KCAP_PARK_RETRY_MS", default_value_t = Timings::default().park_retry_ms, global = true)]
    pub park_retry_ms: u64,
}

impl TimingOpts {
    pub fn timings(&self) -> Timings {
        Timings {
            poll_ms: self.poll_ms.max(1),
            shutdown_budget_ms: self.shutdown_budget_ms,
            retry_initial_ms: self.retry_initial_ms.max(1),
            retry_max_ms: self.retry_max_ms.max(self.retry_initial_ms.max(1)),
            delivery_budget_ms: self.delivery_budget_ms,
            park_retry_ms: self.park_retry_ms,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct HomeOpts {
    /// Root of kcap's files (store, logs). Default: $XDG_DATA_HOME/kcap or ~/.local/share/kcap.
    #[arg(long = "kcap-home", env = "KCAP_HOME", global = true)]
    pub kcap_home: Option<PathBuf>,
}

impl HomeOpts {
    pub fn home(&self) -> PathBuf {
        self.kcap_home.clone().unwrap_or_else(crate::config::kcap_home)
    }
}
