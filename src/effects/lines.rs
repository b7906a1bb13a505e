//! Reads bounded batches of transcript lines after a watermark.
//!
//! Line numbers count every line of the file, blank ones included; only non-blank lines are sent.
//! A last line without its newline is sent only when it parses as a complete JSON object (an
//! append-only writer can only add a `\n` after it) or when the caller says the budget is over.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::effects::open::{open_transcript, probe, Identity, OpenError};
use crate::machine::terminal::{classify, is_blank, LineKind};
use crate::machine::Watermark;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_lines: usize,
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_lines: 1_000,
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// Limits for another try at a batch of `lines` lines and `bytes` bytes that the server
    /// refused as too large (413): half of it.
    pub fn halved(lines: usize, bytes: usize) -> Limits {
        let halved = Limits {
            max_lines: (lines / 2).max(1),
            max_bytes: (bytes / 2).max(1),
        };
        tracing::warn!(
            lines = halved.max_lines,
            "server refused the batch as too large; splitting"
        );
        halved
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub number: u64,
    /// Content without `\n` and without the `\r` of a CRLF ending.
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub lines: Vec<Line>,
    /// Numbers of the blank lines read (not sent, but the server is told they exist).
    pub blanks: Vec<u64>,
    /// Position after the last line read (sent or blank); the watermark once this batch is acked.
    pub end: Watermark,
    /// The read stopped at the end of what is deliverable, not at a limit.
    pub at_end: bool,
    /// An unterminated last line was left for later (still being written).
    pub held_back: bool,
    /// The file was replaced or cut short: this batch starts at line 0, not at the position
    /// asked for.
    pub restarted: bool,
}

impl Batch {
    pub fn bytes(&self) -> usize {
        self.lines.iter().map(|l| l.bytes.len()).sum()
    }
}

/// A reader that stays open between batches, so a sequential drain never seeks or reopens.
///
/// It remembers which file (device, inode) its positions refer to. Each batch starts by looking
/// at what the path names now: if that is another file (an atomic rewrite renamed over it) or a
/// file shorter than the position (rewritten in place), the new content is read from line 0
/// under the same ids, so what the server holds stays, a line that is the same is dropped as a
/// duplicate, and a different line under a used number is kept aside by the server. A batch
/// that reaches the end of the old file looks again, so a drain never ends on a replaced file.
pub struct LineReader {
    path: PathBuf,
    open: Option<(BufReader<File>, u64)>,
    /// The file the caller's positions refer to; `None` until the first open (then the caller's
    /// position is trusted as being about whatever file is there).
    identity: Option<Identity>,
}

impl LineReader {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LineReader {
            path: path.into(),
            open: None,
            identity: None,
        }
    }

    /// A reader whose positions are known to refer to the file `identity` (persisted with the
    /// watermark): a different file at the path is read from line 0.
    pub fn expecting(mut self, identity: Option<Identity>) -> Self {
        self.identity = identity;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file positions refer to, once one was opened.
    pub fn identity(&self) -> Option<Identity> {
        self.identity
    }

    /// Opens the path safely ([`open_transcript`]); `None` when it is missing.
    fn reopen(&mut self) -> io::Result<Option<(Identity, u64)>> {
        self.open = None;
        match open_transcript(&self.path) {
            Ok(opened) => {
                let (identity, len) = (opened.identity, opened.len);
                self.open = Some((BufReader::with_capacity(1 << 20, opened.file), 0));
                Ok(Some((identity, len)))
            }
            Err(OpenError::Missing) => Ok(None),
            Err(e) => Err(e.into_io()),
        }
    }

    /// Checks what the path names now against the file positions refer to. Returns the
    /// position to read from (`from`, or the start when the file was replaced or cut short),
    /// or `None` when there is no transcript.
    fn settle(&mut self, from: Watermark) -> io::Result<Option<Watermark>> {
        let current = probe(&self.path)?;
        let Some((identity, len)) = current else {
            self.open = None;
            return Ok(None);
        };
        let same_file = self.identity.is_none_or(|known| known == identity);
        let reusable =
            same_file && len >= from.offset && matches!(&self.open, Some((_, pos)) if *pos == from.offset);
        if reusable {
            if self.ends_a_line(from)? {
                return Ok(Some(from));
            }
            return self.restart_cut_short(from).map(Some);
        }
        let Some((opened, len)) = self.reopen()? else {
            return Ok(None);
        };
        let mut start = from;
        if self.identity.is_some_and(|known| known != opened) {
            tracing::warn!(path = %self.path.display(), next_line = from.next_line,
                "transcript was replaced by another file; reading it again from line 0 (same ids: what the server holds stays)");
            start = Watermark::default();
        } else if len < from.offset {
            tracing::warn!(path = %self.path.display(), len, watermark = from.offset,
                "transcript is shorter than the delivered position (truncated or replaced); reading it from the start");
            start = Watermark::default();
        }
        self.identity = Some(opened);
        if start == from && !self.ends_a_line(from)? {
            return self.restart_cut_short(from).map(Some);
        }
        let (reader, pos) = self.open.as_mut().expect("opened above");
        reader.seek(SeekFrom::Start(start.offset))?;
        *pos = start.offset;
        Ok(Some(start))
    }

    /// True unless the byte before `from` (a position after a complete line) is not a newline:
    /// then the file was cut short and written again in place between two looks (same inode,
    /// now at least as long), and reading on from `from` would send the middle of a line under
    /// a line number that is not its own.
    fn ends_a_line(&self, from: Watermark) -> io::Result<bool> {
        if from.offset == 0 || from.open_line {
            return Ok(true);
        }
        let Some((reader, _)) = &self.open else {
            return Ok(true);
        };
        let mut byte = [0u8; 1];
        // pread: the reader's own position and buffer are left as they are.
        match std::os::unix::fs::FileExt::read_exact_at(reader.get_ref(), &mut byte, from.offset - 1) {
            Ok(()) => Ok(byte[0] == b'\n'),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The file was rewritten in place: read it again from line 0 under the same ids.
    fn restart_cut_short(&mut self, from: Watermark) -> io::Result<Watermark> {
        tracing::warn!(path = %self.path.display(), next_line = from.next_line,
            "transcript was rewritten in place (the delivered position is not at a line's end); reading it again from line 0");
        let start = Watermark::default();
        let (reader, pos) = self.open.as_mut().expect("open when restarting");
        reader.seek(SeekFrom::Start(start.offset))?;
        *pos = start.offset;
        Ok(start)
    }

    /// True when the path now names a file other than the one being read. Asked of the file
    /// that opens (not of an `lstat`), so it can only say what a reopen would find.
    fn replaced(&self) -> bool {
        match (open_transcript(&self.path), self.identity) {
            (Ok(now), Some(known)) => now.identity != known,
            _ => false,
        }
    }

    /// Reads the next batch after `from`, a position in the file this reader read last (or the
    /// one it was told to expect); see [`LineReader::read_batch_at`].
    pub fn read_batch(
        &mut self,
        from: Watermark,
        limits: Limits,
        take_unterminated: bool,
    ) -> io::Result<Option<Batch>> {
        let identity = self.identity;
        self.read_batch_at(from, identity, limits, take_unterminated)
    }

    /// Reads the next batch after `from`, a position in the file `identity` (`None`: whatever
    /// file is there). `Ok(None)` when the transcript does not exist. When the path names
    /// another file, or one shorter than `from`, the batch starts at line 0 (`restarted`); its
    /// file is then [`LineReader::identity`]. On error the reader forgets its position.
    pub fn read_batch_at(
        &mut self,
        from: Watermark,
        identity: Option<Identity>,
        limits: Limits,
        take_unterminated: bool,
    ) -> io::Result<Option<Batch>> {
        if identity != self.identity {
            self.identity = identity;
            self.open = None;
        }
        let result = (|| {
            let Some(start) = self.settle(from)? else {
                return Ok(None);
            };
            let mut batch = self.read_batch_inner(start, limits, take_unterminated)?;
            batch.restarted = start != from;
            if batch.at_end && self.replaced() {
                // The old file is done, and a new one is in its place: not the end.
                batch.at_end = false;
            }
            Ok(Some(batch))
        })();
        match &result {
            Ok(Some(batch)) => {
                if let Some((_, pos)) = self.open.as_mut() {
                    *pos = batch.end.offset;
                }
            }
            Ok(None) | Err(_) => self.open = None,
        }
        result
    }

    fn read_batch_inner(
        &mut self,
        from: Watermark,
        limits: Limits,
        take_unterminated: bool,
    ) -> io::Result<Batch> {
        let path = self.path.clone();
        let reader = &mut self.open.as_mut().expect("settled before reading").0;
        let mut pos = from.offset;
        let mut next_line = from.next_line;
        let mut open_line = from.open_line;
        let mut lines = Vec::new();
        let mut blanks = Vec::new();
        let mut bytes = 0usize;
        let mut buf = Vec::new();

        if open_line {
            // The previous batch sent an unterminated line; what follows up to `\n` belongs to it.
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf)?;
            if n > 0 && buf.last() == Some(&b'\n') {
                if !is_blank(&buf[..n - 1]) {
                    tracing::warn!(path = %path.display(), line = next_line - 1, extra = n - 1,
                        "a line delivered before its newline grew afterwards; the addition is not sent");
                }
                pos += n as u64;
                open_line = false;
            } else if n > 0 {
                // Still no newline: the addition stays unread until the line is finished, so the
                // reader goes back over what it consumed (the next read starts at `pos`).
                reader.seek_relative(-(n as i64))?;
                return Ok(Batch {
                    lines,
                    blanks,
                    end: Watermark {
                        next_line,
                        offset: pos,
                        open_line,
                    },
                    at_end: true,
                    held_back: true,
                    restarted: false,
                });
            }
        }

        let mut at_end = false;
        let mut held_back = false;
        // At most `max_bytes` of content, unless a single line alone is larger: it goes alone.
        while lines.len() < limits.max_lines && bytes < limits.max_bytes {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf)?;
            if n == 0 {
                at_end = true;
                break;
            }
            let terminated = buf.last() == Some(&b'\n');
            let mut content = &buf[..if terminated { n - 1 } else { n }];
            if content.last() == Some(&b'\r') {
                content = &content[..content.len() - 1];
            }
            if !terminated {
                let complete = take_unterminated || classify(content) != LineKind::Malformed;
                if !complete || is_blank(content) {
                    // Left for its writer to finish: unread, so the next read starts at the
                    // line's first byte, not in its middle.
                    reader.seek_relative(-(n as i64))?;
                    held_back = !is_blank(content);
                    at_end = true;
                    break;
                }
            }
            if !lines.is_empty() && !is_blank(content) && bytes + content.len() > limits.max_bytes {
                // Would overshoot the byte bound: left for the next batch, which starts here.
                reader.seek_relative(-(n as i64))?;
                break;
            }
            if is_blank(content) {
                blanks.push(next_line);
            } else {
                bytes += content.len();
                lines.push(Line {
                    number: next_line,
                    bytes: content.to_vec(),
                });
            }
            pos += n as u64;
            next_line += 1;
            open_line = !terminated;
            if !terminated {
                at_end = true;
                break;
            }
        }
        if !at_end {
            // Limits reached exactly at the end of the file still count as the end.
            at_end = reader.fill_buf()?.is_empty();
        }
        Ok(Batch {
            lines,
            blanks,
            end: Watermark {
                next_line,
                offset: pos,
                open_line,
            },
            at_end,
            held_back,
            restarted: false,
        })
    }

    /// Moves from `from` to the start of line `target` (to skip what the server already holds),
    /// counting newlines without copying lines. Stops early at the end of the complete lines.
    /// A transcript replaced or cut short since `from` is not skipped at all: it is read again
    /// from line 0, so every line of the new file is compared with what the server holds.
    pub fn skip_to_line(&mut self, from: Watermark, target: u64) -> io::Result<Watermark> {
        let Some(start) = self.settle(from)? else {
            return Ok(from);
        };
        if start != from {
            return Ok(start);
        }
        let reader = &mut self.open.as_mut().expect("settled above").0;
        let mut w = start;
        let mut partial = 0u64; // bytes of a line whose newline has not been seen yet
        while w.next_line < target || w.open_line {
            let chunk = reader.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            match memchr::memchr(b'\n', chunk) {
                Some(i) => {
                    reader.consume(i + 1);
                    w.offset += partial + i as u64 + 1;
                    partial = 0;
                    if !w.open_line {
                        w.next_line += 1;
                    }
                    w.open_line = false;
                }
                None => {
                    let n = chunk.len();
                    reader.consume(n);
                    partial += n as u64;
                }
            }
        }
        // The reader may have consumed a partial line past `w`: reopen at `w` next time.
        self.open = None;
        Ok(w)
    }
}
