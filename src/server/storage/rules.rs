//! The exactly-once rules every storage backend shares (pure: no IO, no clock).
//!
//! A backend stores what these functions decide and nothing else, so SQLite and PostgreSQL keep
//! the same lines, count the same duplicates and answer the same `last-line`.

use std::collections::BTreeSet;

use super::{Batch, Principal, SessionRow, SessionSummary, StorageError};
use crate::protocol::IngestReply;
use crate::server::usage::{self, fold, Shutdown, UsageEvent};

/// What already occupies a line number of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A stored line with this event id.
    Line(uuid::Uuid),
    /// The client reported the line blank: it closes the gap but holds no data.
    Blank,
}

/// What to do with one incoming line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineOutcome {
    /// Nothing under this number: store it.
    New,
    /// The same event again (a replay): drop it, count it.
    Duplicate,
    /// A blank marker holds the number: a real line is data, so it replaces the marker.
    ReplacesBlank,
    /// A different event under this number (the transcript was rewritten): keep it aside, never
    /// overwrite the stored one.
    Conflict,
}

/// Classifies an incoming line against what its number already holds.
pub fn classify(stored: Option<Slot>, incoming: uuid::Uuid) -> LineOutcome {
    match stored {
        None => LineOutcome::New,
        Some(Slot::Blank) => LineOutcome::ReplacesBlank,
        Some(Slot::Line(id)) if id == incoming => LineOutcome::Duplicate,
        Some(Slot::Line(_)) => LineOutcome::Conflict,
    }
}

/// Most blank markers one batch may carry (a real transcript has a handful).
pub const MAX_BLANKS: usize = 100_000;

/// The blank markers a batch may set. A client reads a contiguous run of the transcript, each
/// number a line or a blank, so blanks count when the batch's lines and blanks together form
/// one contiguous run; otherwise only those strictly between the batch's own first and last
/// line. Never one of the batch's own lines, never more than [`MAX_BLANKS`]. A stored marker
/// never replaces a line, and [`advance`] never ends the frontier on a blank, so blanks alone
/// (no line after them) cannot move anyone's `last-line`.
pub fn admissible_blanks(line_numbers: &[u64], blanks: &[u64]) -> Result<Vec<u64>, StorageError> {
    if blanks.len() > MAX_BLANKS {
        return Err(StorageError::Invalid(format!(
            "{} blank line numbers in one batch; at most {MAX_BLANKS}",
            blanks.len()
        )));
    }
    let own: BTreeSet<u64> = line_numbers.iter().copied().collect();
    let set: BTreeSet<u64> = blanks.iter().copied().filter(|n| !own.contains(n)).collect();
    let (Some(&lo), Some(&hi)) = (
        own.first().into_iter().chain(set.first()).min(),
        own.last().into_iter().chain(set.last()).max(),
    ) else {
        return Ok(Vec::new());
    };
    let contiguous = (hi - lo) as u128 + 1 == (own.len() + set.len()) as u128;
    if contiguous {
        return Ok(set.into_iter().collect());
    }
    let (Some(&first), Some(&last)) = (own.first(), own.last()) else {
        return Ok(Vec::new());
    };
    Ok(set.into_iter().filter(|n| *n > first && *n < last).collect())
}

/// The new frontier (first number not covered) given the old one and the occupied numbers at or
/// after it in ascending order, each flagged blank or not. The frontier only ever ends just
/// after a line: a run of blanks with no line after it does not count (yet).
pub fn advance(from: u64, occupied_from: impl IntoIterator<Item = (u64, bool)>) -> u64 {
    let (mut next, mut after_line) = (from, from);
    for (n, blank) in occupied_from {
        if n < next {
            continue;
        }
        if n != next {
            break;
        }
        next += 1;
        if !blank {
            after_line = next;
        }
    }
    after_line
}

/// `last-line` from a frontier: the highest number below which nothing is missing, −1 if none.
pub fn last_line_of(contiguous: u64) -> i64 {
    i64::try_from(contiguous).unwrap_or(i64::MAX) - 1
}

/// A batch's counts as a backend classifies its lines, and what they add to the session's row.
#[derive(Debug, Default)]
pub struct Tally {
    /// What the client is told.
    pub reply: IngestReply,
    /// Conflicts newly kept aside; one already kept counts as a duplicate in the row.
    kept: u64,
    /// Whether a stored line was a `session.usage_checkpoint` event.
    pub checkpoints: bool,
}

impl Tally {
    /// Counts a line stored ([`LineOutcome::New`] or [`LineOutcome::ReplacesBlank`]); returns its
    /// shutdown figures as the `shutdowns.usage` column keeps them, if it is a shutdown.
    pub fn stored(&mut self, text: &str) -> Option<String> {
        self.reply.new += 1;
        let (shutdown, checkpoint) = line_facts(text);
        self.checkpoints |= checkpoint;
        shutdown.map(|s| serde_json::to_string(&s).unwrap_or_default())
    }

    /// Counts a replay ([`LineOutcome::Duplicate`]).
    pub fn duplicate(&mut self) {
        self.reply.duplicates += 1;
    }

    /// Counts a [`LineOutcome::Conflict`]; `kept` is how many rows keeping it aside added (0 when
    /// the same line was kept before).
    pub fn conflict(&mut self, kept: u64) {
        self.reply.conflicts += 1;
        self.kept += kept;
    }

    /// What the row's `duplicates` grows by: replays, and conflicts that were already kept.
    pub fn row_duplicates(&self) -> u64 {
        self.reply.duplicates + self.reply.conflicts - self.kept
    }

    /// What the row's `conflicts` grows by: conflicts kept for the first time.
    pub fn row_conflicts(&self) -> u64 {
        self.kept
    }
}

/// The answer to adding a token named `name`, given how many rows its insert added (none: the
/// name is taken).
pub fn token_added(name: &str, added: u64) -> Result<(), StorageError> {
    if added == 0 {
        return Err(StorageError::Exists(format!(
            "a token named {name:?} already exists"
        )));
    }
    Ok(())
}

/// The answer to revoking the token named `name`, given how many rows the revocation changed and
/// whether such a token exists: whether it was revoked just now.
pub fn token_revoked(name: &str, revoked: u64, exists: bool) -> Result<bool, StorageError> {
    if !exists {
        return Err(StorageError::Invalid(format!("no token is named {name:?}")));
    }
    Ok(revoked == 1)
}

/// Checks a batch before any backend sees it: aligned vectors, numbers a database can hold.
pub fn validate(batch: &Batch) -> Result<(), StorageError> {
    let too_big = |n: &u64| *n > i64::MAX as u64 - 1;
    if batch.lines.iter().any(|l| too_big(&l.number)) || batch.blanks.iter().any(too_big) {
        return Err(StorageError::Invalid(format!(
            "line numbers must be below {}",
            i64::MAX
        )));
    }
    let mut seen = BTreeSet::new();
    if let Some(line) = batch.lines.iter().find(|l| !seen.insert(l.number)) {
        return Err(StorageError::Invalid(format!(
            "line number {} appears twice in one batch",
            line.number
        )));
    }
    Ok(())
}

/// Whether `writer` may write to a session owned by `owner`. A session a token creates is owned
/// by that token from its first write (the row is created with the owner in the same
/// transaction), so `None` means it was written without authentication, before the server had
/// tokens. Such a session has no owner to prove, and letting every token write to it (or the
/// first one claim it) would hand it to whoever asks first: only the admin token may write to
/// it, and its owner stays `None`.
pub fn may_write(owner: Option<&str>, writer: &Principal) -> Result<(), StorageError> {
    match (owner, writer) {
        (_, Principal::Admin | Principal::Anonymous) => Ok(()),
        (None, Principal::Token(name)) => Err(StorageError::Forbidden(format!(
            "this session was written before the server had tokens; token {name:?} may not write \
             to it (only the admin token, `kcap serve --token`, may)"
        ))),
        (Some(owner), Principal::Token(name)) if owner == name => Ok(()),
        (Some(owner), Principal::Token(name)) => Err(StorageError::Forbidden(format!(
            "this session belongs to token {owner:?}; token {name:?} may not write to it"
        ))),
    }
}

/// What a stored line tells the usage fold: its shutdown figures, and whether it is a
/// `session.usage_checkpoint` event. [`usage::classify`] decides on the parsed type, never the text.
pub fn line_facts(text: &str) -> (Option<Shutdown>, bool) {
    match usage::classify(text) {
        UsageEvent::Shutdown(s) => (Some(*s), false),
        UsageEvent::Checkpoint => (None, true),
        UsageEvent::Other => (None, false),
    }
}

/// A session's summary from its stored row and its shutdown lines in file order.
pub fn summarize(row: SessionRow, shutdowns: &[Shutdown]) -> SessionSummary {
    let usage = fold(shutdowns, row.has_usage_checkpoints);
    SessionSummary {
        session_id: row.session,
        lines_stored: row.lines,
        last_line_number: last_line_of(row.contiguous),
        duplicates: row.duplicates,
        conflicts: row.conflicts,
        first_seen: row.first_seen,
        last_seen: row.last_seen,
        started_at: Some(row.started.as_ref().map_or(row.first_seen, |s| s.received_at)),
        ended_at: row.ended.as_ref().map(|e| e.received_at),
        started: row.started,
        ended: row.ended,
        notifications: row.notifications,
        last_notification: row.last_notification,
        agent: row.agent,
        cwd: row.cwd,
        repository: row.repository,
        owner: row.owner,
        usage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_each_case() {
        let (a, b) = (uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2));
        assert_eq!(classify(None, a), LineOutcome::New);
        assert_eq!(classify(Some(Slot::Line(a)), a), LineOutcome::Duplicate);
        assert_eq!(classify(Some(Slot::Line(a)), b), LineOutcome::Conflict);
        assert_eq!(classify(Some(Slot::Blank), a), LineOutcome::ReplacesBlank);
    }

    #[test]
    fn blanks_count_only_inside_the_batch_range() {
        // A contiguous run of lines and blanks, as a client reads it, is taken whole.
        assert_eq!(admissible_blanks(&[], &[0, 1, 2]).unwrap(), vec![0, 1, 2]);
        assert_eq!(admissible_blanks(&[6], &[5]).unwrap(), vec![5]);
        assert_eq!(admissible_blanks(&[5], &[4, 5, 6]).unwrap(), vec![4, 6]);
        // Otherwise only blanks between the batch's own lines.
        assert_eq!(
            admissible_blanks(&[3, 7], &[0, 3, 4, 4, 6, 7, 8]).unwrap(),
            vec![4, 6]
        );
        assert_eq!(admissible_blanks(&[], &[0, 5]).unwrap(), Vec::<u64>::new());
        let flood: Vec<u64> = (0..MAX_BLANKS as u64 + 1).collect();
        assert!(admissible_blanks(&[], &flood).is_err());
    }

    #[test]
    fn advance_stops_at_the_first_gap_and_never_ends_on_a_blank() {
        let lines = |ns: &[u64]| ns.iter().map(|n| (*n, false)).collect::<Vec<_>>();
        assert_eq!(advance(0, lines(&[0, 1, 2, 4])), 3);
        assert_eq!(advance(3, lines(&[4, 5])), 3);
        assert_eq!(advance(3, lines(&[1, 3, 4])), 5);
        assert_eq!(advance(0, [(0, true), (1, true), (2, true)]), 0);
        assert_eq!(advance(0, [(0, false), (1, true), (2, false), (3, true)]), 3);
        assert_eq!(last_line_of(0), -1);
        assert_eq!(last_line_of(5), 4);
    }

    #[test]
    fn ownership() {
        let t = |n: &str| Principal::Token(n.into());
        assert!(matches!(
            may_write(None, &t("a")),
            Err(StorageError::Forbidden(_))
        ));
        assert!(may_write(None, &Principal::Admin).is_ok());
        assert!(may_write(Some("a"), &t("a")).is_ok());
        assert!(matches!(
            may_write(Some("a"), &t("b")),
            Err(StorageError::Forbidden(_))
        ));
        assert!(may_write(Some("a"), &Principal::Admin).is_ok());
    }

    #[test]
    fn a_conflict_kept_before_counts_as_a_duplicate_in_the_row() {
        let mut t = Tally::default();
        assert_eq!(t.stored(r#"{"type":"x"}"#), None);
        assert!(t.stored(r#"{"type":"session.shutdown","data":{}}"#).is_some());
        t.stored(r#"{"type":"session.usage_checkpoint","data":{}}"#);
        t.duplicate();
        t.conflict(1);
        t.conflict(0);
        assert_eq!((t.reply.new, t.reply.duplicates, t.reply.conflicts), (3, 1, 2));
        assert_eq!((t.row_duplicates(), t.row_conflicts()), (2, 1));
        assert!(t.checkpoints);
    }

    #[test]
    fn token_answers() {
        assert!(matches!(token_added("a", 0), Err(StorageError::Exists(_))));
        assert!(token_added("a", 1).is_ok());
        assert!(matches!(
            token_revoked("a", 0, false),
            Err(StorageError::Invalid(_))
        ));
        assert_eq!(token_revoked("a", 0, true), Ok(false));
        assert_eq!(token_revoked("a", 1, true), Ok(true));
    }

    #[test]
    fn checkpoints_are_parsed_types_not_text() {
        assert!(line_facts(r#"{"type":"session.usage_checkpoint","data":{}}"#).1);
        assert!(!line_facts(r#"{"type":"tool.result","data":{"out":"\"session.usage_checkpoint\""}}"#).1);
    }
}
