//! kcap: captures coding-agent sessions and delivers every transcript line, exactly once in
//! effect, to an ingest server.
//!
//! - [`agent`]: each coding agent behind one small trait (paths, hooks, terminal rule, name).
//! - [`machine`]: the finalizer as a pure state machine (no clock, no IO).
//! - [`effects`]: the tokio interpreter that performs the machine's commands.
//! - [`store`]: the sled store shared by every kcap process (transition log, watermarks, leases).
//! - [`redact`]: secret redaction, a pure text transform applied to everything that leaves.
//! - [`server`]: the embedded ingest server speaking the kcap protocol.

pub mod agent;
pub mod cli;
pub mod config;
pub mod effects;
pub mod ids;
pub mod machine;
pub mod protocol;
pub mod redact;
pub mod server;
pub mod store;
