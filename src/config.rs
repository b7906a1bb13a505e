//! Where kcap keeps its files, its settings (config file, environment, flags) and how it reads
//! the clock (docs/architecture.md).

pub mod file;
pub mod settings;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use file::{config_path, ConfigFile};
pub use settings::{resolve, Resolved, Setting, Source, SETTINGS};

use crate::ids::SessionId;
use crate::machine::Millis;

/// The config file, read once per process (hooks and every command read it).
pub fn loaded() -> &'static ConfigFile {
    static FILE: OnceLock<ConfigFile> = OnceLock::new();
    FILE.get_or_init(ConfigFile::load)
}

/// The value of the setting `key` with no flag given: environment, else config file, else
/// default (see [`settings::resolve`]).
pub fn value(key: &str) -> Option<String> {
    let setting = settings::setting(key)?;
    resolve(setting, None, loaded()).value
}

/// Root of kcap's own files: `$KCAP_HOME`, else the config file's `kcap_home` (each only when
/// absolute, see [`settings::validate`]), else `$XDG_DATA_HOME/kcap`, else `~/.local/share/kcap`.
pub fn kcap_home() -> PathBuf {
    if let Some(dir) = value("kcap_home") {
        return dir.into();
    }
    if let Some(dir) = non_empty_env("XDG_DATA_HOME") {
        return Path::new(&dir).join("kcap");
    }
    home_dir().join(".local/share/kcap")
}

/// The default agent's transcript of `session` under its root `agent_home` (see
/// [`crate::agent::Agent::transcript_path`]).
pub fn transcript_path(agent_home: &Path, session: SessionId) -> PathBuf {
    crate::agent::default().transcript_path(agent_home, session)
}

/// `<kcap_home>/logs/<session>.log`: a finalizer's log.
pub fn session_log_path(kcap_home: &Path, session: SessionId) -> PathBuf {
    kcap_home.join("logs").join(format!("{}.log", session.dashed()))
}

/// `$HOME`, else `/tmp`.
pub(crate) fn home_dir() -> PathBuf {
    non_empty_env("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Wall-clock time in epoch milliseconds; the only clock the interpreter reads.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}
