//! Where log lines go: a detached finalizer has no terminal, so it writes to its session's file.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("KCAP_LOG").unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Appends log lines to `path`; falls back to stderr if the file cannot be opened.
pub fn to_file(path: &Path) -> Option<()> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(file) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter())
                .with_ansi(false)
                .with_writer(Mutex::new(Lossy(file)))
                .try_init();
            Some(())
        }
        Err(e) => {
            to_stderr();
            tracing::warn!(path = %path.display(), error = %e, "cannot open the log file");
            None
        }
    }
}

/// Colour only on a terminal, and never with `NO_COLOR` set (https://no-color.org).
pub fn use_colour(stream_is_terminal: bool) -> bool {
    stream_is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Interactive commands: warnings and errors on stderr unless KCAP_LOG says otherwise.
pub fn to_stderr() {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_env("KCAP_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(use_colour(std::io::stderr().is_terminal()))
        .with_writer(|| Lossy(std::io::stderr()))
        .try_init();
}

/// A log writer whose failures are dropped. On a full disk (or a closed stderr) a failed write
/// makes tracing-subscriber report it with `eprintln!`, which panics when stderr fails too: in
/// a detached finalizer, watcher or sweep, stderr is the same log file on the same full disk,
/// so its first log line killed it before it delivered anything. A log line lost is the lesser
/// harm.
struct Lossy<W>(W);

impl<W: Write> Write for Lossy<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(self.0.write(buf).unwrap_or(buf.len()))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}
