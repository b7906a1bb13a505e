//! Answers `ObserveTail`: is the transcript's last non-blank line a complete `session.shutdown`?
//!
//! The first look seeks to the end and walks back to the last line; later looks read only the
//! bytes appended since, so an idle poll costs one `stat` whatever the file size. The candidate
//! line is classified by streaming it through the JSON parser, so a 20 MB last line is read once
//! and never held in memory.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::effects::open::{open_transcript, OpenError};
use crate::machine::terminal::{classify_reader, is_blank, LineKind};
use crate::machine::Tail;

const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u64,
    end: u64,
}

#[derive(Debug, Default)]
struct Scan {
    /// Device and inode of the file scanned: a replaced file starts a new scan.
    identity: (u64, u64),
    /// Bytes `[0, scanned)` are accounted for.
    scanned: u64,
    /// Start of the line still open at `scanned` (no `\n` seen yet).
    open_start: u64,
    open_nonblank: bool,
    last_complete_nonblank: Option<Span>,
    /// The last classification, so an unchanged candidate is not parsed again.
    classified: Option<(Span, LineKind)>,
}

pub struct TailObserver {
    path: PathBuf,
    scan: Option<Scan>,
}

impl TailObserver {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        TailObserver {
            path: path.into(),
            scan: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A missing or refused transcript (a symlink, a FIFO: [`open_transcript`] logs why, once)
    /// is `Missing`; so is one that cannot be read, with a warning.
    pub fn observe(&mut self) -> Tail {
        match self.try_observe() {
            Ok(tail) => tail,
            Err(e) => {
                if !matches!(e, OpenError::Missing | OpenError::Refused(_)) {
                    tracing::warn!(path = %self.path.display(), error = %e, "transcript unreadable; treated as missing");
                }
                self.scan = None;
                Tail::Missing
            }
        }
    }

    fn try_observe(&mut self) -> Result<Tail, OpenError> {
        let opened = open_transcript(&self.path)?;
        let (mut file, identity, len) = (opened.file, opened.identity, opened.len);
        self.scan_file(&mut file, identity, len).map_err(OpenError::Io)
    }

    fn scan_file(&mut self, file: &mut File, identity: (u64, u64), len: u64) -> io::Result<Tail> {
        let stale = match &self.scan {
            Some(scan) if scan.identity != identity => {
                tracing::warn!(path = %self.path.display(), "transcript was replaced; rescanning its end");
                true
            }
            Some(scan) if len < scan.scanned => {
                tracing::warn!(path = %self.path.display(), was = scan.scanned, now = len, "transcript shrank; rescanning its end");
                true
            }
            Some(_) => false,
            None => true,
        };
        if stale {
            self.scan = Some(initial_scan(file, identity, len)?);
        }
        let scan = self.scan.as_mut().expect("scan set above");
        if len > scan.scanned {
            scan_forward(file, scan, len)?;
        }
        let candidate = if scan.open_nonblank {
            Some(Span {
                start: scan.open_start,
                end: scan.scanned,
            })
        } else {
            scan.last_complete_nonblank
        };
        let Some(span) = candidate else {
            return Ok(Tail::NotYet);
        };
        let kind = match scan.classified {
            Some((s, kind)) if s == span => kind,
            _ => {
                file.seek(SeekFrom::Start(span.start))?;
                let kind = classify_reader(io::BufReader::with_capacity(
                    CHUNK,
                    (&*file).take(span.end - span.start),
                ));
                scan.classified = Some((span, kind));
                kind
            }
        };
        Ok(match kind {
            LineKind::Shutdown => Tail::Shutdown { offset: span.start },
            LineKind::Other | LineKind::Malformed => Tail::NotYet,
        })
    }
}

/// Finds the open last line and the last complete non-blank line by walking back from the end.
fn initial_scan(file: &mut File, identity: (u64, u64), len: u64) -> io::Result<Scan> {
    let open_start = match rfind_newline(file, len)? {
        Some(nl) => nl + 1,
        None => 0,
    };
    let open_nonblank = !region_is_blank(file, open_start, len)?;
    let mut last_complete_nonblank = None;
    let mut end = open_start.checked_sub(1); // position of the '\n' ending the previous line
    while let Some(nl) = end {
        let start = rfind_newline(file, nl)?.map_or(0, |p| p + 1);
        if !region_is_blank(file, start, nl)? {
            last_complete_nonblank = Some(Span { start, end: nl });
            break;
        }
        end = start.checked_sub(1);
    }
    Ok(Scan {
        identity,
        scanned: len,
        open_start,
        open_nonblank,
        last_complete_nonblank,
        classified: None,
    })
}

fn scan_forward(file: &mut File, scan: &mut Scan, len: u64) -> io::Result<()> {
    file.seek(SeekFrom::Start(scan.scanned))?;
    let mut reader = file.take(len - scan.scanned);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        let base = scan.scanned;
        let mut from = 0;
        for nl in memchr::memchr_iter(b'\n', chunk) {
            scan.open_nonblank |= !is_blank(&chunk[from..nl]);
            if scan.open_nonblank {
                scan.last_complete_nonblank = Some(Span {
                    start: scan.open_start,
                    end: base + nl as u64,
                });
            }
            scan.open_start = base + nl as u64 + 1;
            scan.open_nonblank = false;
            from = nl + 1;
        }
        scan.open_nonblank |= !is_blank(&chunk[from..]);
        scan.scanned += n as u64;
    }
    Ok(())
}

/// Position of the last `\n` before `end`, reading backwards in chunks.
fn rfind_newline(file: &mut File, end: u64) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; CHUNK];
    let mut hi = end;
    while hi > 0 {
        let lo = hi.saturating_sub(CHUNK as u64);
        let chunk = &mut buf[..(hi - lo) as usize];
        file.seek(SeekFrom::Start(lo))?;
        file.read_exact(chunk)?;
        if let Some(i) = memchr::memrchr(b'\n', chunk) {
            return Ok(Some(lo + i as u64));
        }
        hi = lo;
    }
    Ok(None)
}

fn region_is_blank(file: &mut File, start: u64, end: u64) -> io::Result<bool> {
    file.seek(SeekFrom::Start(start))?;
    let mut reader = (&*file).take(end - start);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        if !is_blank(&buf[..n]) {
            return Ok(false);
        }
    }
}
