//! `kcap import --dry-run`: what one transcript would send, read the way delivery reads it
//! (batches after the local watermark, blank lines skipped) and redacted the way delivery
//! redacts it, without a byte leaving the machine.

use std::borrow::Cow;
use std::path::Path;

use crate::effects::lines::{Limits, LineReader};
use crate::effects::redact;
use crate::ids::SessionId;
use crate::store::Store;

/// Lines, bytes (after redaction) and lines with a secret redacted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// Lines that would be sent.
    pub lines: u64,
    /// Bytes of line content that would be sent, after redaction.
    pub bytes: u64,
    /// Lines in which redaction replaced something.
    pub redacted_lines: u64,
}

/// Counts what delivery would send of `transcript` after the local watermark. Lines the server
/// already holds from another machine's delivery are counted too (a dry run asks no server).
pub fn count(
    store: &Store,
    session: SessionId,
    transcript: &Path,
    take_unterminated: bool,
) -> Result<Count, String> {
    let mut position = store
        .watermark(session)
        .map_err(|e| format!("cannot read the store: {e}"))?
        .unwrap_or_default();
    let mut reader = LineReader::new(transcript);
    let mut count = Count::default();
    loop {
        let Some(batch) = reader
            .read_batch(position, Limits::default(), take_unterminated)
            .map_err(|e| format!("cannot read the transcript: {e}"))?
        else {
            return Ok(count);
        };
        for line in &batch.lines {
            let text = String::from_utf8_lossy(&line.bytes);
            let sent = redact::line(Cow::Borrowed(text.as_ref()));
            count.lines += 1;
            count.bytes += sent.len() as u64;
            count.redacted_lines += u64::from(sent != text);
        }
        if batch.at_end || batch.end == position {
            return Ok(count);
        }
        position = batch.end;
    }
}
