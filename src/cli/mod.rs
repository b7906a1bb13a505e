//! Command implementations behind `src/bin/kcap.rs`.

pub mod demo;
pub mod finalize;
pub mod logging;
pub mod options;
pub mod serve;
pub mod status;
