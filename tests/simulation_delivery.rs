//! Deterministic simulation of the one delivery component ([`Deliverer`], the code the
//! finalizer's interpreter, the watcher, `kcap import` and the hook's inline drain all run)
//! against a simulated server that stores EVERY copy it receives, a real transcript file that
//! grows, is cut short and is replaced, and an in-memory position store. For every seed the run
//! is crashed after each delivery step in turn (the deliverer is dropped and rebuilt from the
//! persisted position, as a restarted process does), and the server cuts replies after it
//! committed a batch (the client sees an error though the lines are stored).
//!
//! Checked for every schedule:
//! - every non-blank line is stored, under its own number and deterministic id, with its text;
//! - no line number holds two different contents (the server's conflict count is 0), no blank
//!   line is stored: so each line is stored exactly once in effect (copies share one id);
//! - a deliverer never sends a line below its resume point max(local, server last-line + 1)
//!   unless the transcript was cut short or replaced since it started;
//! - delivery finishes within a bounded number of steps (no endless loop).
//!
//! A failure prints its seed; `KCAP_SIM_SEED=<n>` replays one, `KCAP_SIM_SEEDS=<n>` runs more
//! (the soak: `KCAP_SIM_SEEDS=5000 cargo test --release --test simulation_delivery`);
//! `KCAP_SIM_TRACE=1` prints every step.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kcap::effects::client::{LoneLine, SendError};
use kcap::effects::delivery::{Deliverer, DeliveryError, Positions, Server};
use kcap::effects::lines::Limits;
use kcap::ids::{event_id, SessionId};
use kcap::machine::Watermark;
use kcap::protocol::IngestReply;
use kcap::store::Position;

use common::replace::replace_keeping_old_inode;
use common::rng::{seeds, Rng};

/// What the simulated server holds and saw.
#[derive(Default)]
struct Held {
    /// line number -> every copy received: (id, text).
    copies: BTreeMap<u64, Vec<(uuid::Uuid, String)>>,
    /// Blank line numbers the client reported.
    blanks: BTreeSet<u64>,
    /// Batches that carried a line number already held under another id.
    conflicts: u64,
    /// Every batch received: its lowest line number (for the resume-point check).
    batch_starts: Vec<u64>,
    /// Scripted faults, drawn from the seed.
    rng: Option<Rng>,
    /// Percent of requests failing before the commit, and of replies cut after it.
    fail_before: u64,
    cut_after: u64,
    /// A batch larger than this many bytes is refused with 413 (never smaller than one line).
    max_body: usize,
}

impl Held {
    /// The contiguous frontier: the highest number below which every line is known.
    fn last_line(&self) -> Option<u64> {
        let mut n = 0u64;
        while self.copies.contains_key(&n) || self.blanks.contains(&n) {
            n += 1;
        }
        n.checked_sub(1)
    }

    fn roll(&mut self, percent: u64) -> bool {
        self.rng.as_mut().is_some_and(|r| r.chance(percent))
    }
}

#[derive(Clone, Default)]
struct SimServer(Arc<Mutex<Held>>);

impl Server for SimServer {
    async fn last_line(&self, _session: SessionId) -> Result<Option<u64>, SendError> {
        let mut held = self.0.lock().unwrap();
        let fail = held.fail_before;
        if held.roll(fail) {
            return Err(SendError::Retryable("simulated outage".into()));
        }
        Ok(held.last_line())
    }

    async fn send_batch(
        &self,
        _session: SessionId,
        body: Vec<u8>,
        _lone: Option<LoneLine>,
    ) -> Result<Option<IngestReply>, SendError> {
        let mut held = self.0.lock().unwrap();
        let fail = held.fail_before;
        if held.roll(fail) {
            return Err(SendError::Retryable("simulated outage".into()));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).expect("a batch is JSON");
        let lines = v["lines"].as_array().unwrap();
        if body.len() > held.max_body && lines.len() > 1 {
            return Err(SendError::TooLarge);
        }
        let numbers = v["line_numbers"].as_array().unwrap();
        let ids = v["event_ids"].as_array().unwrap();
        if let Some(min) = numbers.iter().filter_map(|n| n.as_u64()).min() {
            held.batch_starts.push(min);
        }
        let (mut new, mut duplicates, mut conflicts) = (0, 0, 0);
        for ((n, id), text) in numbers.iter().zip(ids).zip(lines) {
            let n = n.as_u64().unwrap();
            let id: uuid::Uuid = id.as_str().unwrap().parse().unwrap();
            let copies = held.copies.entry(n).or_default();
            let conflicting = copies.iter().any(|(other, _)| *other != id);
            if copies.is_empty() {
                new += 1;
            } else if conflicting {
                conflicts += 1;
            } else {
                duplicates += 1;
            }
            copies.push((id, text.as_str().unwrap().to_string()));
            if conflicting {
                held.conflicts += 1;
            }
        }
        for b in v["blank_lines"].as_array().into_iter().flatten() {
            held.blanks.insert(b.as_u64().unwrap());
        }
        let cut = held.cut_after;
        if held.roll(cut) {
            return Err(SendError::Retryable("reply cut after the commit".into()));
        }
        Ok(Some(IngestReply {
            new,
            duplicates,
            conflicts,
        }))
    }
}

/// The position store, in memory, with the store's own rule ([`Position::advanced`]).
#[derive(Clone, Default)]
struct MemPositions(Arc<Mutex<Option<Position>>>);

impl Positions for MemPositions {
    fn position(&self, _session: SessionId) -> Result<Option<Position>, String> {
        Ok(*self.0.lock().unwrap())
    }

    fn advance(&self, _session: SessionId, w: Watermark, identity: Option<(u64, u64)>) -> Result<(), String> {
        let mut p = self.0.lock().unwrap();
        *p = Some(Position::advanced(*p, w, identity).0);
        Ok(())
    }
}

/// The transcript as its writer sees it: the full text it will hold, and how much is written.
struct Transcript {
    path: PathBuf,
    lines: Vec<String>,
    written: usize,
    /// A cut or a replacement happened since the current deliverer started.
    disturbed: bool,
}

impl Transcript {
    fn generate(rng: &mut Rng, dir: &Path) -> Transcript {
        let n = 1 + rng.below(40) as usize;
        let lines = (0..n)
            .map(|i| {
                if rng.chance(8) {
                    String::new()
                } else {
                    let pad = "p".repeat(rng.below(200) as usize);
                    format!(r#"{{"type":"x","n":{i},"pad":"{pad}"}}"#)
                }
            })
            .collect();
        let session_dir = dir.join("session-state").join(session().dashed());
        std::fs::create_dir_all(&session_dir).unwrap();
        let t = Transcript {
            path: session_dir.join("events.jsonl"),
            lines,
            written: 0,
            disturbed: false,
        };
        t.write_prefix(0, false);
        t
    }

    fn text(&self, upto: usize) -> String {
        self.lines[..upto].iter().map(|l| format!("{l}\n")).collect()
    }

    /// Writes the first `upto` lines: in place (same inode) or as a new file renamed over it.
    fn write_prefix(&self, upto: usize, replace: bool) {
        if replace {
            replace_keeping_old_inode(&self.path, &self.text(upto));
        } else {
            std::fs::write(&self.path, self.text(upto)).unwrap();
        }
    }

    fn complete(&self) -> bool {
        self.written == self.lines.len()
    }

    /// The writer's move between two delivery steps: append, cut short, or replace.
    fn evolve(&mut self, rng: &mut Rng) {
        match rng.below(100) {
            0..=59 if !self.complete() => {
                // Appended, as its writer does (never rewritten: that would be a cut).
                use std::io::Write;
                let upto = (self.written + 1 + rng.below(6) as usize).min(self.lines.len());
                let more: String = self.lines[self.written..upto]
                    .iter()
                    .map(|l| format!("{l}\n"))
                    .collect();
                let mut f = std::fs::OpenOptions::new().append(true).open(&self.path).unwrap();
                f.write_all(more.as_bytes()).unwrap();
                self.written = upto;
            }
            60..=62 if self.written > 0 => {
                // Cut short (a rewrite in place), the same lines to come again.
                self.written = rng.below(self.written as u64) as usize;
                self.write_prefix(self.written, false);
                self.disturbed = true;
            }
            63..=64 => {
                // Replaced by a new file with the same lines (an atomic rewrite).
                self.write_prefix(self.written, true);
                self.disturbed = true;
            }
            _ => {}
        }
    }
}

type Sim = Deliverer<SimServer, MemPositions>;

fn session() -> SessionId {
    "5a1e0000-0000-4000-8000-0000000051a0".parse().unwrap()
}

/// A deliverer as a (re)started process builds it: from the persisted position.
fn start(t: &mut Transcript, server: &SimServer, positions: &MemPositions, limits: Limits) -> (Sim, u64) {
    let p = positions.position(session()).unwrap();
    let held = server.0.lock().unwrap().last_line();
    let local = p.map_or(0, |p| p.watermark.next_line);
    let floor = local.max(held.map_or(0, |n| n + 1));
    // A file replaced or cut short before this start is read from line 0: no floor then.
    let meta = std::fs::metadata(&t.path).unwrap();
    let same = p.is_none_or(|p| {
        use std::os::unix::fs::MetadataExt;
        p.identity.is_none_or(|id| id == (meta.dev(), meta.ino())) && meta.len() >= p.watermark.offset
    });
    // Lines not written yet cannot be skipped over: the skip stops at the file's end.
    let floor = if same { floor.min(t.written as u64) } else { 0 };
    t.disturbed = false;
    if std::env::var("KCAP_SIM_TRACE").is_ok() {
        eprintln!(
            "start: local {p:?} server {held:?} written {} floor {floor}",
            t.written
        );
    }
    let d = Deliverer::new(
        session(),
        &t.path,
        server.clone(),
        Some(positions.clone()),
        limits,
        p.map(|p| p.watermark),
        p.and_then(|p| p.identity),
    );
    (d, floor)
}

/// One schedule: a crash before step `crash_after`, if set. Returns the world to check.
async fn schedule(seed: u64, crash_after: Option<usize>) -> Result<World, String> {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(seed);
    let mut t = Transcript::generate(&mut rng, dir.path());
    let longest = t.lines.iter().map(String::len).max().unwrap_or(0);
    let server = SimServer::default();
    {
        let mut held = server.0.lock().unwrap();
        held.rng = Some(Rng::new(seed ^ 0xfa17));
        held.fail_before = rng.below(25);
        held.cut_after = rng.below(25);
        held.max_body = longest + 200 + rng.below(3_000) as usize;
    }
    let limits = Limits {
        max_lines: 1 + rng.below(8) as usize,
        max_bytes: 1 << 20,
    };
    let positions = MemPositions::default();
    let (mut d, mut floor) = start(&mut t, &server, &positions, limits);
    let mut seen_batches = 0;
    let mut steps = 0;
    let mut quiet = 0;
    for _ in 0..5_000 {
        if crash_after == Some(steps) {
            // Crash: the deliverer and everything in memory are gone.
            (d, floor) = start(&mut t, &server, &positions, limits);
        }
        t.evolve(&mut rng);
        steps += 1;
        let result = d.next_batch(false).await;
        if std::env::var("KCAP_SIM_TRACE").is_ok() {
            eprintln!(
                "step {steps}: written {} floor {floor} {:?} -> {:?} server {:?}",
                t.written,
                d.position(),
                result,
                server.0.lock().unwrap().last_line()
            );
        }
        {
            let held = server.0.lock().unwrap();
            for &first in &held.batch_starts[seen_batches..] {
                if first < floor && !t.disturbed {
                    return Err(format!(
                        "step {steps}: a batch started at line {first}, below the resume point {floor}"
                    ));
                }
            }
            seen_batches = held.batch_starts.len();
        }
        match result {
            Ok(sent) => {
                if let Some(w) = sent.upto {
                    positions.advance(session(), w, d.position().1).unwrap();
                }
                // Settled: everything written, nothing left to deliver, nothing pending.
                if sent.drained && t.complete() {
                    quiet += 1;
                    if quiet >= 2 {
                        return Ok(World {
                            steps,
                            server,
                            transcript: t,
                            _dir: dir,
                        });
                    }
                } else {
                    quiet = 0;
                }
            }
            Err(e) if e.retryable() => quiet = 0,
            Err(e) => return Err(format!("step {steps}: refused: {e}")),
        }
    }
    Err(format!("not drained after {steps} steps (a loop?)"))
}

#[track_caller]
fn check_server(seed: u64, server: &SimServer, t: &Transcript) -> Result<(), String> {
    let held = server.0.lock().unwrap();
    if held.conflicts != 0 {
        return Err(format!(
            "{} conflicts: two contents under one number",
            held.conflicts
        ));
    }
    for (n, line) in t.lines.iter().enumerate() {
        let n = n as u64;
        let copies = held.copies.get(&n);
        if line.is_empty() {
            if copies.is_some() {
                return Err(format!("blank line {n} was stored"));
            }
            continue;
        }
        let Some(copies) = copies else {
            return Err(format!("line {n} never stored"));
        };
        let id = event_id(&session(), n, line.as_bytes());
        if let Some((bad, text)) = copies.iter().find(|(i, text)| *i != id || text != line) {
            return Err(format!("line {n} stored as {bad} {text:?}, not {id} {line:?}"));
        }
    }
    if let Some(n) = held.copies.keys().find(|n| **n as usize >= t.lines.len()) {
        return Err(format!("line {n} does not exist (seed {seed})"));
    }
    Ok(())
}

async fn check_seed(seed: u64) -> Result<usize, String> {
    let steps = run_checked(seed, None)
        .await
        .map_err(|e| format!("clean run: {e}"))?;
    for crash_after in 0..steps {
        run_checked(seed, Some(crash_after))
            .await
            .map_err(|e| format!("crash after step {crash_after}: {e}"))?;
    }
    Ok(steps + 1)
}

/// A schedule, then the server's contents checked against the transcript's final text.
async fn run_checked(seed: u64, crash_after: Option<usize>) -> Result<usize, String> {
    let world = schedule(seed, crash_after).await?;
    check_server(seed, &world.server, &world.transcript)?;
    Ok(world.steps)
}

/// What a schedule leaves to check.
struct World {
    steps: usize,
    server: SimServer,
    transcript: Transcript,
    _dir: tempfile::TempDir,
}

#[tokio::test(flavor = "current_thread")]
async fn every_crash_point_of_every_seed_delivers_each_line_exactly_once() {
    let seeds = seeds(25);
    let mut schedules = 0;
    for seed in &seeds {
        match check_seed(*seed).await {
            Ok(n) => schedules += n,
            Err(e) => panic!("seed {seed}: {e}\nreplay with KCAP_SIM_SEED={seed}"),
        }
    }
    eprintln!(
        "delivery simulation: {} seeds, {schedules} schedules, every line exactly once",
        seeds.len()
    );
    assert!(schedules >= seeds.len());
}

/// The real watcher, with a kcap home that knows nothing (a new machine, a wiped home), resumes
/// from the server's `last-line` and delivers every line the server lacks: none skipped, none
/// stored twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_that_resumes_from_the_server_with_an_empty_kcap_home_delivers_every_line() {
    use kcap::effects::client::Client;
    use kcap::effects::interpreter::Delivery;
    use kcap::effects::watcher::Watcher;

    let server = common::server().await;
    let env = common::Env::new();
    let line = |n: usize| format!("{{\"type\":\"x\",\"n\":{n}}}\n");
    let first: String = (0..20).map(line).collect();
    let (sid, path) = env.session(first.as_bytes());
    let delivery = Delivery {
        client: Client::new(&server.url(), None, std::time::Duration::from_secs(5)).unwrap(),
        limits: Limits {
            max_lines: 7,
            max_bytes: 1 << 20,
        },
    };
    let watcher = |home: &Path| Watcher {
        store: kcap::store::Store::new(home),
        session: sid,
        transcript: path.clone(),
        delivery: delivery.clone(),
        poll: std::time::Duration::ZERO,
    };
    // One home delivers the first 20 lines...
    let a = watcher(&env.dir.path().join("home-a"))
        .deliver_once(false)
        .await
        .unwrap();
    assert_eq!(a.lines, 20);
    // ...and keeps its position (a restart there need not ask the server to skip ahead)...
    let kept = kcap::store::Store::new(env.dir.path().join("home-a"))
        .position(sid)
        .unwrap()
        .map(|p| p.watermark.next_line);
    assert_eq!(kept, Some(20), "the watcher's position was not persisted");
    // ...the transcript grows, and a watcher on an empty home takes over.
    let rest: String = (20..50).map(line).collect();
    common::append(&path, rest.as_bytes());
    let b = watcher(&env.dir.path().join("home-b"))
        .deliver_once(false)
        .await
        .unwrap();
    assert_eq!(
        (b.lines, b.duplicates),
        (30, 0),
        "it resumes at line 20, not before"
    );
    common::assert_exactly_once(&server, sid, format!("{first}{rest}").as_bytes());
}

/// A calm world for one scenario: a transcript of `lines` small lines of which `written` are on
/// disk, a server that takes any body, and batches of at most 4 lines.
fn small_world(
    seed: u64,
    dir: &Path,
    lines: usize,
    written: usize,
) -> (Transcript, SimServer, MemPositions, Limits) {
    let mut t = Transcript::generate(&mut Rng::new(seed), dir);
    t.lines = (0..lines).map(|n| format!(r#"{{"type":"x","n":{n}}}"#)).collect();
    t.written = written;
    t.write_prefix(written, false);
    let server = SimServer::default();
    server.0.lock().unwrap().max_body = usize::MAX;
    let limits = Limits {
        max_lines: 4,
        max_bytes: 1 << 20,
    };
    (t, server, MemPositions::default(), limits)
}

/// A transcript cut short that stays short is read again from line 0 once (same ids: nothing
/// new is stored), then the deliverer is idle: it does not send the same lines on every step
/// (the old watcher did, for ever).
#[tokio::test(flavor = "current_thread")]
async fn a_transcript_cut_short_for_good_is_read_again_once_then_left_idle() {
    let dir = tempfile::tempdir().unwrap();
    let (mut t, server, positions, limits) = small_world(7, dir.path(), 20, 20);
    let (mut d, _) = start(&mut t, &server, &positions, limits);
    let sent = d.deliver_available(false).await.unwrap();
    assert!(sent.drained);
    // Cut to 5 lines, in place, for good.
    t.written = 5;
    t.write_prefix(5, false);
    let batches = || server.0.lock().unwrap().batch_starts.len();
    let before = batches();
    for _ in 0..10 {
        let sent = d.next_batch(false).await.unwrap();
        assert!(!sent.missing);
    }
    let resent = batches() - before;
    assert!(
        resent <= 2,
        "{resent} batches sent for a 5-line file that did not change: a loop"
    );
    assert_eq!(
        d.position().0.next_line,
        5,
        "the position is the short file's end"
    );
    check_server(7, &server, &t).unwrap();
}

/// With read-ahead on (as in production), a line appended after the deliverer reached the end
/// of the file goes out on the very next step: no read-ahead is taken at the end, where it
/// would be a stale empty batch that delays the new line by a step.
#[tokio::test(flavor = "current_thread")]
async fn a_line_appended_after_the_end_goes_out_on_the_next_step_with_read_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let (mut t, server, positions, limits) = small_world(11, dir.path(), 10, 9);
    // Not `.sequential()`: read-ahead on.
    let (mut d, _) = start(&mut t, &server, &positions, limits);
    let sent = d.deliver_available(false).await.unwrap();
    assert!(sent.drained);
    assert_eq!(server.0.lock().unwrap().last_line(), Some(8));
    t.written = 10;
    t.write_prefix(10, false);
    let sent = d.next_batch(false).await.unwrap();
    assert_eq!(
        server.0.lock().unwrap().last_line(),
        Some(9),
        "the appended line was not sent on the next step ({sent:?})"
    );
    check_server(11, &server, &t).unwrap();
}

/// A transcript that is a symlink is refused for good (the machine parks at once, as for a
/// FIFO): not a read error worth another try, and nothing is read through it.
#[tokio::test(flavor = "current_thread")]
async fn a_symlinked_transcript_is_refused_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let session_dir = dir.path().join("session-state").join(session().dashed());
    std::fs::create_dir_all(&session_dir).unwrap();
    let elsewhere = dir.path().join("elsewhere.jsonl");
    std::fs::write(&elsewhere, "{\"type\":\"x\"}\n").unwrap();
    let path = session_dir.join("events.jsonl");
    std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
    let server = SimServer::default();
    let mut d: Sim = Deliverer::new(
        session(),
        &path,
        server.clone(),
        None,
        Limits::default(),
        None,
        None,
    );
    let err = d.next_batch(false).await.unwrap_err();
    assert!(
        matches!(err, DeliveryError::TranscriptRefused(_)) && !err.retryable(),
        "a symlinked transcript gave {err:?}"
    );
    // The log line (and the transition log) must say why: the message, shown through Display.
    let shown = err.to_string();
    assert!(
        shown.contains("symlink") && shown.contains("events.jsonl"),
        "the refusal does not say what was refused: {shown:?}"
    );
    assert!(
        server.0.lock().unwrap().copies.is_empty(),
        "a line was read through the symlink"
    );
}

/// The deliverer's counts are what the server acknowledged: batches, lines and raw bytes sent,
/// and the server's own tally of new, duplicate and conflicting lines (the watcher's and the
/// finalizer's statistics are differences of these counts).
#[tokio::test(flavor = "current_thread")]
async fn counts_tally_what_the_server_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (mut t, server, positions, limits) = small_world(13, dir.path(), 10, 10);
    {
        // Line 6 already held as sent (a duplicate), line 8 under another content (a
        // conflict); line 0 is not held, so the server's resume point skips nothing.
        let mut held = server.0.lock().unwrap();
        let six = &t.lines[6];
        held.copies
            .insert(6, vec![(event_id(&session(), 6, six.as_bytes()), six.clone())]);
        held.copies.insert(8, vec![(uuid::Uuid::nil(), "other".into())]);
    }
    let (mut d, _) = start(&mut t, &server, &positions, limits);
    let sent = d.deliver_available(false).await.unwrap();
    assert!(sent.drained && !sent.missing);
    let bytes: usize = t.lines.iter().map(String::len).sum();
    assert_eq!(
        d.counts,
        kcap::effects::delivery::Counts {
            batches: 3, // 4 + 4 + 2 lines
            lines: 10,
            bytes: bytes as u64,
            new: 8,
            duplicates: 1,
            conflicts: 1,
        }
    );
}

/// The store as a deliverer's [`Positions`]: what `advance` wrote is what `position` reads back,
/// with the file it refers to (a restarted watcher or import resumes there).
#[test]
fn the_store_reads_back_the_position_a_deliverer_advanced() {
    let dir = tempfile::tempdir().unwrap();
    let store = kcap::store::Store::new(dir.path());
    assert_eq!(Positions::position(&store, session()).unwrap(), None);
    let w = Watermark {
        next_line: 7,
        offset: 120,
        open_line: false,
    };
    Positions::advance(&store, session(), w, Some((3, 9))).unwrap();
    let p = Positions::position(&store, session())
        .unwrap()
        .expect("the advanced position");
    assert_eq!((p.watermark, p.identity), (w, Some((3, 9))));
}

/// A transcript replaced by one with other lines while the server holds more than the local
/// position (a process acknowledged lines, then died before it persisted them): the restarted
/// deliverer reads the new file from line 0, so the server sees its changed lines (and keeps
/// them aside as conflicts), instead of skipping to the server's `last-line` past lines it
/// never compared. The simulation's replacements keep the same lines, so they cannot see this.
#[tokio::test(flavor = "current_thread")]
async fn a_replaced_transcript_is_read_from_line_0_even_when_the_server_is_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let (mut t, server, positions, limits) = small_world(17, dir.path(), 10, 10);
    let (mut d, _) = start(&mut t, &server, &positions, limits);
    let first = d.next_batch(false).await.unwrap();
    positions
        .advance(session(), first.upto.unwrap(), d.position().1)
        .unwrap();
    while !d.next_batch(false).await.unwrap().drained {}
    assert_eq!(server.0.lock().unwrap().last_line(), Some(9));
    drop(d);
    for n in 4..10 {
        t.lines[n] = format!(r#"{{"type":"y","n":{n}}}"#);
    }
    t.write_prefix(10, true);
    let (mut d, _) = start(&mut t, &server, &positions, limits);
    d.deliver_available(false).await.unwrap();
    let held = server.0.lock().unwrap();
    let copies = &held.copies[&7];
    assert!(
        copies.iter().any(|(_, text)| *text == t.lines[7]),
        "the replaced file's line 7 never reached the server: {copies:?}"
    );
}

/// A line source that tells `before_read` where each read starts; a read fails with the error
/// it returns.
struct Observed<F> {
    inner: Box<dyn kcap::effects::delivery::LineSource>,
    before_read: F,
}

impl<F: FnMut(u64) -> Option<std::io::Error> + Send + Sync + 'static> kcap::effects::delivery::LineSource
    for Observed<F>
{
    fn read_batch_at(
        &mut self,
        from: Watermark,
        identity: Option<(u64, u64)>,
        limits: Limits,
        take_unterminated: bool,
    ) -> std::io::Result<Option<kcap::effects::lines::Batch>> {
        if let Some(e) = (self.before_read)(from.next_line) {
            return Err(e);
        }
        self.inner
            .read_batch_at(from, identity, limits, take_unterminated)
    }

    fn skip_to_line(&mut self, from: Watermark, target: u64) -> std::io::Result<Watermark> {
        self.inner.skip_to_line(from, target)
    }

    fn identity(&self) -> Option<(u64, u64)> {
        self.inner.identity()
    }

    fn current(&self) -> Option<(u64, u64)> {
        self.inner.current()
    }
}

/// With read-ahead on, the batch read while the previous one was in flight is the one sent
/// next: every batch start is read once, none is read again (a read-ahead that is never
/// reused costs a second read of every batch, and nothing else would show it).
#[tokio::test(flavor = "current_thread")]
async fn each_batch_is_read_once_when_the_read_ahead_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut t, server, positions, limits) = small_world(19, dir.path(), 10, 10);
    let (d, _) = start(&mut t, &server, &positions, limits);
    let reads = Arc::new(Mutex::new(Vec::new()));
    let seen = reads.clone();
    let mut d = d.wrap_lines(|inner| Observed {
        inner,
        before_read: move |from| {
            seen.lock().unwrap().push(from);
            None
        },
    });
    assert!(d.deliver_available(false).await.unwrap().drained);
    check_server(19, &server, &t).unwrap();
    // Batches of 4: lines 0-3, 4-7 (read ahead), 8-9 (read ahead, at the end: no more).
    assert_eq!(*reads.lock().unwrap(), vec![0, 4, 8], "batch starts read");
}

/// A read that fails for an ordinary reason (not a refused file) is worth another try: the
/// machine backs off instead of parking, and the next step delivers.
#[tokio::test(flavor = "current_thread")]
async fn a_failed_read_is_retryable_and_the_next_step_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut t, server, positions, limits) = small_world(23, dir.path(), 3, 3);
    let (d, _) = start(&mut t, &server, &positions, limits);
    let mut d = d.sequential().wrap_lines(|inner| {
        let mut failed = false;
        Observed {
            inner,
            // The first read fails with an ordinary IO error; the rest read through.
            before_read: move |_| {
                (!std::mem::replace(&mut failed, true)).then(|| std::io::Error::other("simulated disk error"))
            },
        }
    });
    let err = d.next_batch(false).await.unwrap_err();
    assert!(
        matches!(err, DeliveryError::Read(_)) && err.retryable(),
        "an IO error gave {err:?}"
    );
    assert!(
        err.to_string().contains("simulated disk error"),
        "the cause is not shown: {err}"
    );
    assert!(d.deliver_available(false).await.unwrap().drained);
    check_server(23, &server, &t).unwrap();
}

/// A batch of blank lines only sends nothing but still moves the position past them (the
/// caller persists `upto`), and a step that finds nothing new reports no move.
#[tokio::test(flavor = "current_thread")]
async fn a_blank_only_batch_moves_the_position_and_an_empty_step_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (mut t, server, positions, limits) = small_world(29, dir.path(), 8, 0);
    for line in &mut t.lines[4..] {
        line.clear();
    }
    t.written = 8;
    t.write_prefix(8, false);
    let (d, _) = start(&mut t, &server, &positions, limits);
    let mut d = d.sequential();
    let first = d.next_batch(false).await.unwrap();
    assert_eq!(first.upto.map(|w| w.next_line), Some(4), "{first:?}");
    let blanks = d.next_batch(false).await.unwrap();
    assert_eq!(
        (blanks.upto.map(|w| w.next_line), blanks.drained),
        (Some(8), true),
        "the blank lines 4..8: {blanks:?}"
    );
    let idle = d.next_batch(false).await.unwrap();
    assert_eq!(idle.upto, None, "nothing new, yet a move: {idle:?}");
    check_server(29, &server, &t).unwrap();
}
