//! Command implementations behind `src/bin/kcap.rs`.

pub mod config;
pub mod demo;
pub mod doctor;
pub mod finalize;
pub mod hook;
pub mod import;
pub mod logging;
pub mod login;
pub mod options;
pub mod plugin;
pub mod redact;
pub mod serve;
pub mod sessions;
pub mod status;
pub mod watch;
pub mod watchers;
