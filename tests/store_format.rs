//! Persisted records carry a format version: a store written by kcap at commit 81747c3 (before
//! the field existed; kept as an export in tests/fixtures/) is read and carried on, and a record
//! from a newer kcap is refused with a clear error.

use kcap::ids::SessionId;
use kcap::machine::{Input, Phase, Watermark};
use kcap::store::{Holder, NoticeKind, Step, Store, FORMAT};

const SESSION: &str = "5a1e0000-0000-4000-8000-00000000f1c7";

/// Loads the fixture's trees into a sled database at `<home>/store`, as that kcap left them,
/// and returns the open database: sled releases its file lock from a background thread after a
/// drop, so opening it again at once with plain `sled::open` can fail (kcap's store waits).
#[track_caller]
fn load_fixture(home: &std::path::Path) -> sled::Db {
    let text = include_str!("fixtures/store-81747c3.json");
    let dump: serde_json::Value = serde_json::from_str(text).unwrap();
    let db = open(&home.join("store"));
    for (name, rows) in dump["trees"].as_object().unwrap() {
        let tree = db.open_tree(name).unwrap();
        for row in rows.as_array().unwrap() {
            let key = hex(row[0].as_str().unwrap());
            tree.insert(key, row[1].as_str().unwrap().as_bytes()).unwrap();
        }
    }
    db.flush().unwrap();
    db
}

/// Opens sled at `path`, waiting (up to 10 s) for a previous holder's I/O threads to let go of
/// its file lock.
#[track_caller]
fn open(path: &std::path::Path) -> sled::Db {
    let started = std::time::Instant::now();
    loop {
        match sled::Config::new().path(path).flush_every_ms(None).open() {
            Ok(db) => return db,
            Err(e)
                if e.to_string().contains("could not acquire lock") && started.elapsed().as_secs() < 10 =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn a_store_written_by_81747c3_is_read_and_carried_on() {
    let home = tempfile::tempdir().unwrap();
    load_fixture(home.path());
    let store = Store::new(home.path());
    let session: SessionId = SESSION.parse().unwrap();

    let record = store
        .latest_machine(session)
        .unwrap()
        .expect("the fixture's machine");
    let (state, diverged) = record.state();
    assert_eq!(diverged, 0, "the old log must replay exactly");
    let Phase::Parked { retry_at, .. } = state.phase else {
        panic!("{:?}", state.phase)
    };
    assert_eq!(retry_at, 1_500 + record.meta.timings.park_retry_ms);
    assert_eq!(record.log.len(), 6);
    assert_eq!(
        record.local_watermark(),
        Some(Watermark {
            next_line: 3,
            offset: 120,
            open_line: false
        })
    );
    assert_eq!(record.identity, Some((66, 99)));
    let lease = store.lease(session).unwrap().expect("the fixture's lease");
    assert_eq!(lease.holder.pid, 4242);
    let notices = store.pending_notices(Some(session)).unwrap();
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].notice.kind, NoticeKind::SessionEnd);

    // Carry on: the new code resumes the machine and appends to the old log.
    let now = 2_000;
    let resumed = Input::Resumed { now };
    let (next, _) = kcap::machine::step(&state, &resumed).unwrap();
    let further = Watermark {
        next_line: 5,
        offset: 200,
        open_line: false,
    };
    let holder = Holder {
        pid: 1,
        start_ticks: 1,
    };
    store
        .record_step(&Step {
            session: record.meta.session,
            generation: record.meta.generation,
            input: resumed,
            phase_after: next.phase.clone(),
            watermark: None,
            identity: None,
            holder,
            at: now,
        })
        .unwrap();
    store.advance_watermark(session, further, Some((66, 99))).unwrap();
    let again = store.latest_machine(session).unwrap().unwrap();
    assert_eq!(again.log.len(), 7);
    assert_eq!(again.state(), (next, 0));
    assert_eq!(again.local_watermark(), Some(further));
    drop(store);

    // Old records stay as they were; new ones carry the current format.
    let db = open(&home.path().join("store"));
    let log = db.open_tree("log").unwrap();
    let formats: Vec<Option<u64>> = log
        .iter()
        .map(|kv| {
            let v: serde_json::Value = serde_json::from_slice(&kv.unwrap().1).unwrap();
            v.get("format").and_then(|f| f.as_u64())
        })
        .collect();
    assert_eq!(&formats[..6], &[None; 6]);
    assert_eq!(formats[6], Some(u64::from(FORMAT)));
}

#[test]
fn a_record_from_a_newer_kcap_is_refused_with_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let session: SessionId = SESSION.parse().unwrap();
    {
        let db = load_fixture(home.path());
        let tree = db.open_tree("watermarks").unwrap();
        let newer = format!(r#"{{"next_line":9,"offset":9,"format":{}}}"#, FORMAT + 1);
        tree.insert(session.as_bytes(), newer.as_bytes()).unwrap();
        db.flush().unwrap();
    }
    let err = Store::new(home.path()).position(session).unwrap_err().to_string();
    assert!(err.contains("newer than this kcap reads"), "{err}");
}
