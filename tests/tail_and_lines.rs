//! Terminal-line detection and batch reading on real files.

use std::io::Write;
use std::path::{Path, PathBuf};

use kcap::effects::lines::{Batch, Limits, LineReader};
use kcap::effects::tail::TailObserver;
use kcap::machine::{Tail, Watermark};

const START: &str = r#"{"type":"session.start","data":{"sessionId":"x"}}"#;
const MSG: &str = r#"{"type":"assistant.message","data":{"content":"hi"}}"#;
const SHUTDOWN: &str = r#"{"type":"session.shutdown","data":{"modelMetrics":{}}}"#;
const RESUME: &str = r#"{"type":"session.resume","data":{}}"#;

/// A transcript where kcap reads one: `session-state/<id>/events.jsonl` (anything else is refused).
fn file_with(dir: &Path, content: &[u8]) -> PathBuf {
    let path = dir
        .join("session-state")
        .join("6f1c2d3e-4b5a-4c6d-8e7f-901a2b3c4d5e")
        .join("events.jsonl");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, content).unwrap();
    path
}

fn append(path: &Path, content: &[u8]) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(content)
        .unwrap();
}

fn observe(content: &[u8]) -> Tail {
    let dir = tempfile::tempdir().unwrap();
    TailObserver::new(file_with(dir.path(), content)).observe()
}

/// The tail of `content` is terminal, at its (first) shutdown line.
#[track_caller]
fn assert_terminal_at_its_shutdown(content: &str) {
    assert_eq!(
        observe(content.as_bytes()),
        Tail::Shutdown {
            offset: content.find(SHUTDOWN).unwrap() as u64
        }
    );
}

#[test]
fn shutdown_as_last_line_is_terminal() {
    let c = format!("{START}\n{MSG}\n{SHUTDOWN}\n");
    assert_terminal_at_its_shutdown(&c);
}

#[test]
fn trailing_blank_lines_are_skipped() {
    let c = format!("{START}\n{SHUTDOWN}\n\n  \n\t\r\n\n");
    assert_terminal_at_its_shutdown(&c);
}

#[test]
fn shutdown_followed_by_resume_is_not_terminal() {
    let c = format!("{START}\n{SHUTDOWN}\n{RESUME}\n{MSG}\n");
    assert_eq!(observe(c.as_bytes()), Tail::NotYet);
    let c = format!("{START}\n{SHUTDOWN}\n{RESUME}\n");
    assert_eq!(observe(c.as_bytes()), Tail::NotYet);
}

#[test]
fn malformed_last_line_is_not_terminal() {
    let c = format!("{START}\n{SHUTDOWN}\nTHIS IS NOT VALID JSON AT ALL {{{{{{\n");
    assert_eq!(observe(c.as_bytes()), Tail::NotYet);
    let truncated = &SHUTDOWN[..SHUTDOWN.len() - 5];
    assert_eq!(
        observe(format!("{START}\n{truncated}\n").as_bytes()),
        Tail::NotYet
    );
}

#[test]
fn missing_file_empty_file_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        TailObserver::new(dir.path().join("nope.jsonl")).observe(),
        Tail::Missing
    );
    assert_eq!(TailObserver::new(dir.path()).observe(), Tail::Missing);
    assert_eq!(observe(b""), Tail::NotYet);
    assert_eq!(observe(b"\n\n\n"), Tail::NotYet);
}

#[test]
fn partial_last_line() {
    // A resume being written after a shutdown: the half line is the last line, and it is not a
    // complete object, so the session is not shut down.
    let c = format!("{START}\n{SHUTDOWN}\n{{\"type\":\"session.resu");
    assert_eq!(observe(c.as_bytes()), Tail::NotYet);
    // A complete shutdown object whose newline has not been written yet is terminal.
    let c = format!("{START}\n{SHUTDOWN}");
    assert_terminal_at_its_shutdown(&c);
    // A half-written shutdown is not.
    let c = format!("{START}\n{}", &SHUTDOWN[..20]);
    assert_eq!(observe(c.as_bytes()), Tail::NotYet);
}

#[test]
fn crlf_line_endings() {
    let c = format!("{START}\r\n{MSG}\r\n{SHUTDOWN}\r\n\r\n");
    assert_terminal_at_its_shutdown(&c);
}

#[test]
fn twenty_megabyte_last_line() {
    let big = "x".repeat(20 * 1024 * 1024);
    let huge_shutdown =
        format!(r#"{{"type":"session.shutdown","data":{{"codeChanges":{{"filesModified":["{big}"]}}}}}}"#);
    let c = format!("{START}\n{huge_shutdown}\n");
    assert_eq!(
        observe(c.as_bytes()),
        Tail::Shutdown {
            offset: START.len() as u64 + 1
        }
    );
    let huge_message = format!(r#"{{"type":"assistant.message","data":{{"content":"{big}"}}}}"#);
    let c = format!("{START}\n{SHUTDOWN}\n{huge_message}\n");
    assert_eq!(observe(c.as_bytes()), Tail::NotYet);
}

#[test]
fn incremental_observation_follows_appends_resumes_and_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_with(dir.path(), format!("{START}\n{MSG}\n").as_bytes());
    let mut tail = TailObserver::new(&path);
    assert_eq!(tail.observe(), Tail::NotYet);
    assert_eq!(tail.observe(), Tail::NotYet);
    append(&path, &SHUTDOWN.as_bytes()[..10]);
    assert_eq!(tail.observe(), Tail::NotYet);
    append(&path, format!("{}\n", &SHUTDOWN[10..]).as_bytes());
    let offset = (START.len() + MSG.len() + 2) as u64;
    assert_eq!(tail.observe(), Tail::Shutdown { offset });
    append(&path, b"\n\n");
    assert_eq!(tail.observe(), Tail::Shutdown { offset });
    append(&path, format!("{RESUME}\n").as_bytes());
    assert_eq!(tail.observe(), Tail::NotYet);
    append(&path, format!("{MSG}\n{SHUTDOWN}\n").as_bytes());
    let second = std::fs::read_to_string(&path).unwrap().rfind(SHUTDOWN).unwrap() as u64;
    assert_eq!(tail.observe(), Tail::Shutdown { offset: second });
    // Replaced by a shorter file without a shutdown: detected, rescanned.
    let replacement = dir.path().join("new.jsonl");
    std::fs::write(&replacement, format!("{START}\n")).unwrap();
    std::fs::rename(&replacement, &path).unwrap();
    assert_eq!(tail.observe(), Tail::NotYet);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(tail.observe(), Tail::Missing);
}

/// The reader's batch from `w`; the transcript must be there.
#[track_caller]
fn read_batch(reader: &mut LineReader, w: Watermark, limits: Limits, take_unterminated: bool) -> Batch {
    reader
        .read_batch(w, limits, take_unterminated)
        .unwrap()
        .expect("transcript present")
}

/// The reader's batch from `w` with the default limits, holding an unfinished line back.
#[track_caller]
fn next_batch(reader: &mut LineReader, w: Watermark) -> Batch {
    read_batch(reader, w, Limits::default(), false)
}

/// The position before line `next_line`, at byte `offset`, with no line open.
fn before_line(next_line: u64, offset: u64) -> Watermark {
    Watermark {
        next_line,
        offset,
        open_line: false,
    }
}

fn read_all(path: &Path, limits: Limits, take_unterminated: bool) -> (Vec<(u64, String)>, Watermark) {
    let mut reader = LineReader::new(path);
    let mut w = Watermark::default();
    let mut out = Vec::new();
    loop {
        let batch = read_batch(&mut reader, w, limits, take_unterminated);
        out.extend(
            batch
                .lines
                .iter()
                .map(|l| (l.number, String::from_utf8(l.bytes.clone()).unwrap())),
        );
        w = batch.end;
        if batch.at_end {
            return (out, w);
        }
    }
}

#[test]
fn line_numbers_count_blank_lines_and_crlf_is_stripped() {
    let dir = tempfile::tempdir().unwrap();
    let c = format!("{START}\r\n\n{MSG}\n   \n{SHUTDOWN}\n");
    let path = file_with(dir.path(), c.as_bytes());
    let (lines, end) = read_all(&path, Limits::default(), false);
    assert_eq!(
        lines,
        vec![(0, START.into()), (2, MSG.into()), (4, SHUTDOWN.into())]
    );
    assert_eq!(end, before_line(5, c.len() as u64));
}

#[test]
fn batches_respect_line_and_byte_limits_and_a_big_line_goes_alone() {
    let dir = tempfile::tempdir().unwrap();
    let big = format!(r#"{{"type":"x","data":"{}"}}"#, "y".repeat(5000));
    let c = format!("{MSG}\n{MSG}\n{MSG}\n{big}\n{MSG}\n");
    let path = file_with(dir.path(), c.as_bytes());
    let mut reader = LineReader::new(&path);
    let limits = Limits {
        max_lines: 2,
        max_bytes: 1000,
    };
    let mut w = Watermark::default();
    let mut sizes = Vec::new();
    loop {
        let batch = read_batch(&mut reader, w, limits, false);
        assert!(
            batch.lines.len() == 1 || batch.bytes() <= limits.max_bytes,
            "a batch of several lines over the byte bound: {}",
            batch.bytes()
        );
        sizes.push(batch.lines.iter().map(|l| l.number).collect::<Vec<_>>());
        w = batch.end;
        if batch.at_end {
            break;
        }
    }
    // The big line is not added to line 2's batch (that would overshoot): it goes alone.
    assert_eq!(sizes, vec![vec![0, 1], vec![2], vec![3], vec![4]]);
}

#[test]
fn unterminated_line_waits_unless_complete_or_budget_over() {
    let dir = tempfile::tempdir().unwrap();
    let half = &MSG[..15];
    let path = file_with(dir.path(), format!("{START}\n{half}").as_bytes());
    let (lines, end) = read_all(&path, Limits::default(), false);
    assert_eq!(lines.len(), 1);
    assert_eq!(end, before_line(1, START.len() as u64 + 1));
    // Budget over: the fragment goes as it is.
    let (lines, end) = read_all(&path, Limits::default(), true);
    assert_eq!(lines.last().unwrap(), &(1, half.to_string()));
    assert!(end.open_line);

    // A complete object without its newline goes; its newline arriving later starts no new line.
    let path = file_with(dir.path(), format!("{START}\n{SHUTDOWN}").as_bytes());
    let mut reader = LineReader::new(&path);
    let first = next_batch(&mut reader, Watermark::default());
    assert_eq!(first.lines.len(), 2);
    assert!(first.end.open_line);
    append(&path, format!("\n{MSG}\n").as_bytes());
    let second = next_batch(&mut reader, first.end);
    assert_eq!(second.lines.iter().map(|l| l.number).collect::<Vec<_>>(), vec![2]);
    assert_eq!(second.end.next_line, 3);
    assert!(!second.end.open_line);
}

#[test]
fn reading_resumes_from_a_watermark_with_a_fresh_reader() {
    let dir = tempfile::tempdir().unwrap();
    let c = format!("{START}\n\n{MSG}\n{SHUTDOWN}\n");
    let path = file_with(dir.path(), c.as_bytes());
    let one_line = Limits {
        max_lines: 1,
        max_bytes: 1 << 20,
    };
    let (all, _) = read_all(&path, one_line, false);
    let first = read_batch(&mut LineReader::new(&path), Watermark::default(), one_line, false);
    let rest = next_batch(&mut LineReader::new(&path), first.end);
    let mut joined: Vec<u64> = first.lines.iter().chain(&rest.lines).map(|l| l.number).collect();
    joined.dedup();
    assert_eq!(joined, all.iter().map(|(n, _)| *n).collect::<Vec<_>>());
}

#[test]
fn skip_to_line_counts_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let c = format!("{START}\n\n{MSG}\n{MSG}\n{SHUTDOWN}\n");
    let path = file_with(dir.path(), c.as_bytes());
    let mut reader = LineReader::new(&path);
    let w = reader.skip_to_line(Watermark::default(), 3).unwrap();
    let expected_offset = (START.len() + 1 + 1 + MSG.len() + 1) as u64;
    assert_eq!(w, before_line(3, expected_offset));
    let rest = next_batch(&mut reader, w);
    assert_eq!(
        rest.lines.iter().map(|l| l.number).collect::<Vec<_>>(),
        vec![3, 4]
    );
    // Past the end: stops at the last complete line.
    let w = LineReader::new(&path)
        .skip_to_line(Watermark::default(), 99)
        .unwrap();
    assert_eq!(w.next_line, 5);
}

/// A transcript cut to nothing and written again in place (same inode, now longer) between two
/// batches: the old position falls in the middle of a new line. Reading on from it would send a
/// fragment under a number that is not its own; the reader starts again from line 0 instead,
/// whether it kept the file open or starts fresh from the persisted position.
#[test]
fn a_transcript_rewritten_in_place_mid_line_is_read_again_from_line_0() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_with(dir.path(), format!("{MSG}\n{MSG}\n").as_bytes());
    let mut reader = LineReader::new(&path);
    let first = next_batch(&mut reader, Watermark::default());
    assert_eq!(first.end.next_line, 2);
    let long = r#"{"type":"assistant.message","data":{"content":"a longer line than before"}}"#;
    let rewritten = format!("{long}\n{long}\n{long}\n");
    // In place: truncate and write through the same inode.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.write_all(rewritten.as_bytes()).unwrap();
    drop(f);
    assert!(rewritten.as_bytes()[first.end.offset as usize - 1] != b'\n');

    for (name, mut r) in [("open reader", reader), ("fresh reader", LineReader::new(&path))] {
        let batch = next_batch(&mut r, first.end);
        assert!(batch.restarted, "{name}: not restarted");
        let got: Vec<(u64, &[u8])> = batch.lines.iter().map(|l| (l.number, &l.bytes[..])).collect();
        let want: Vec<(u64, &[u8])> = (0..3).map(|n| (n, long.as_bytes())).collect();
        assert_eq!(got, want, "{name}");
        assert_eq!(batch.end.offset, rewritten.len() as u64, "{name}");
    }
}

/// A writer caught mid-line: the reader holds the fragment back, and when the line is finished
/// the same reader sends it whole under its own number. Before the fix the held-back bytes were
/// consumed from the reader's buffer, so the next batch began mid-line and sent the line's tail
/// as the line (found by the delivery simulation: "line 33 stored as \"ppp…\"}\"").
#[test]
fn a_line_caught_half_written_is_sent_whole_once_finished() {
    let dir = tempfile::tempdir().unwrap();
    let (head, tail) = MSG.split_at(15);
    let path = file_with(dir.path(), format!("{START}\n{head}").as_bytes());
    let mut reader = LineReader::new(&path);
    let first = next_batch(&mut reader, Watermark::default());
    assert_eq!(first.lines.len(), 1);
    assert!(first.held_back);
    append(&path, format!("{tail}\n{SHUTDOWN}\n").as_bytes());
    let second = next_batch(&mut reader, first.end);
    let got = numbered(&second.lines);
    assert_eq!(got, vec![(1, MSG.to_string()), (2, SHUTDOWN.to_string())]);
    assert_eq!(
        second.end.offset,
        (START.len() + MSG.len() + SHUTDOWN.len() + 3) as u64
    );

    // The same for a line delivered before its newline that then grows: the addition is held
    // back until its newline, and nothing of it is lost to the next read.
    let path = file_with(dir.path(), format!("{START}\n{SHUTDOWN}").as_bytes());
    let mut reader = LineReader::new(&path);
    let first = next_batch(&mut reader, Watermark::default());
    assert!(first.end.open_line);
    append(&path, b"xyz");
    let held = next_batch(&mut reader, first.end);
    assert!(held.lines.is_empty());
    append(&path, format!("\n{MSG}\n").as_bytes());
    let next = next_batch(&mut reader, held.end);
    let got = numbered(&next.lines);
    assert_eq!(got, vec![(2, MSG.to_string())]);
}

/// A batch's lines as (number, text).
fn numbered(lines: &[kcap::effects::lines::Line]) -> Vec<(u64, String)> {
    lines
        .iter()
        .map(|l| (l.number, String::from_utf8_lossy(&l.bytes).into_owned()))
        .collect()
}

/// Skipping to the server's resume point must not pass over a transcript that was replaced or
/// cut short since the local position: the reader starts again from line 0 and the batches
/// that follow compare every line with what the server holds (equal: a duplicate; different:
/// kept aside). Counting on to the target would leave the new file's first lines unsent and
/// unflagged.
#[test]
fn a_skip_over_a_replaced_transcript_starts_again_from_line_0() {
    let dir = tempfile::tempdir().unwrap();
    let c = format!("{START}\n{MSG}\n{MSG}\n{MSG}\n");
    let path = file_with(dir.path(), c.as_bytes());
    let mut reader = LineReader::new(&path);
    let local = reader.skip_to_line(Watermark::default(), 2).unwrap();
    assert_eq!(local.next_line, 2);
    // Replaced by rename with other, longer content.
    let other = dir.path().join("other.jsonl");
    std::fs::write(&other, format!("{MSG}\n{SHUTDOWN}\n{MSG}\n{MSG}\n{MSG}\n{MSG}\n")).unwrap();
    std::fs::rename(&other, &path).unwrap();
    let w = reader.skip_to_line(local, 5).unwrap();
    assert_eq!(
        w,
        Watermark::default(),
        "the skip passed over the new file's lines"
    );
    // Cut short in place below the local position: the same.
    let mut reader = LineReader::new(&path);
    let local = reader.skip_to_line(Watermark::default(), 5).unwrap();
    std::fs::write(&path, format!("{START}\n")).unwrap();
    let w = reader.skip_to_line(local, 6).unwrap();
    assert_eq!(w, Watermark::default(), "the skip passed over a cut-short file");
}
