//! Command implementations behind `src/bin/kcap.rs`.

pub mod demo;
pub mod finalize;
pub mod hook;
pub mod import;
pub mod logging;
pub mod options;
pub mod plugin;
pub mod redact;
pub mod serve;
pub mod status;
pub mod watch;
