//! `kcap serve --import-sled`: a store written in the sled-era layout (generated here, since
//! that code is gone) is imported once, nothing lost, and importing again adds nothing.

mod common;

use std::time::Duration;

use common::*;
use kcap::ids::{event_id, SessionId};
use kcap::server::storage::{sled_import, Storage};

/// Writes the sled-era server layout: `lines` (session ‖ n → kind ‖ id ‖ text), `conflicts`
/// (session ‖ n ‖ id → text), `sessions` (session → JSON metadata).
fn old_store(dir: &std::path::Path, sessions: &[(SessionId, u64)]) -> Vec<(SessionId, u64, String)> {
    let db = sled::open(dir).unwrap();
    let (lines, conflicts, meta) = (
        db.open_tree("lines").unwrap(),
        db.open_tree("conflicts").unwrap(),
        db.open_tree("sessions").unwrap(),
    );
    let mut written = Vec::new();
    for &(sid, count) in sessions {
        for n in 0..count {
            let mut key = sid.as_bytes().to_vec();
            key.extend_from_slice(&n.to_be_bytes());
            if n == 3 {
                // A blank line the client reported.
                let mut v = vec![1u8];
                v.extend_from_slice(uuid::Uuid::nil().as_bytes());
                lines.insert(key, v).unwrap();
                continue;
            }
            let text = format!(r#"{{"type":"x","n":{n}}}"#);
            let mut v = vec![0u8];
            v.extend_from_slice(event_id(&sid, n, text.as_bytes()).as_bytes());
            v.extend_from_slice(text.as_bytes());
            lines.insert(key, v).unwrap();
            written.push((sid, n, text));
        }
        let mut ckey = sid.as_bytes().to_vec();
        ckey.extend_from_slice(&1u64.to_be_bytes());
        ckey.extend_from_slice(event_id(&sid, 1, b"{}").as_bytes());
        conflicts.insert(ckey, &b"{}"[..]).unwrap();
        let m = serde_json::json!({
            "contiguous": count, "lines": count - 1, "duplicates": 0, "conflicts": 1,
            "first_seen": 1, "last_seen": 2,
            "started": {"received_at": 1, "reason": null, "cwd": "/w", "detail": "startup"},
            "ended": null, "notifications": 0, "has_usage_checkpoints": false
        });
        meta.insert(sid.as_bytes(), serde_json::to_vec(&m).unwrap())
            .unwrap();
    }
    db.flush().unwrap();
    written
}

#[test]
fn a_sled_store_is_imported_whole_and_once() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (SessionId::new_random(), SessionId::new_random());
    let written = old_store(&dir.path().join("ingest"), &[(a, 50), (b, 2_500)]);
    let storage = Storage::sqlite(&dir.path().join("kcap.db")).unwrap();
    let report = sled_import::import(&dir.path().join("ingest"), storage.backend()).unwrap();
    assert_eq!(report.sessions, 2);
    assert_eq!(report.lines_new, written.len() as u64);
    assert_eq!(report.conflicts, 2);
    for (sid, n, text) in &written {
        let held = storage.backend().lines(*sid).unwrap();
        assert_eq!(&held.lines[n].text, text);
        assert_eq!(held.lines[n].id, event_id(sid, *n, text.as_bytes()));
    }
    assert_eq!(
        storage.backend().last_line(a).unwrap(),
        49,
        "the blank line 3 is closed"
    );
    assert_eq!(storage.backend().last_line(b).unwrap(), 2_499);
    let s = storage.backend().summary(a).unwrap().unwrap();
    assert_eq!((s.conflicts, s.cwd.as_deref()), (1, Some("/w")));
    let again = sled_import::import(&dir.path().join("ingest"), storage.backend()).unwrap();
    assert_eq!(again.lines_new, 0);
    assert_eq!(again.lines_already_present, written.len() as u64);
    assert_eq!(storage.backend().lines(b).unwrap().lines.len(), 2_499);
    let missing = sled_import::import(&dir.path().join("nope"), storage.backend());
    assert!(missing
        .unwrap_err()
        .to_string()
        .contains("does not look like a sled store"));
}

#[tokio::test(flavor = "multi_thread")]
async fn kcap_serve_imports_before_serving() {
    let env = Env::new();
    let sid = SessionId::new_random();
    let old = env.dir.path().join("old-ingest");
    let written = old_store(&old, &[(sid, 10)]);
    let addr = free_port();
    let url = format!("http://{addr}");
    let _server = env
        .kcap("http://unused")
        .args(["serve", "--addr", &addr.to_string(), "--import-sled"])
        .arg(&old)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let mut detail = serde_json::Value::Null;
    for _ in 0..250 {
        if let Ok(r) = http.get(format!("{url}/api/sessions/{sid}")).send().await {
            detail = r.json().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(detail["lines_stored"], written.len());
    assert_eq!(detail["last_line_number"], 9);
    assert!(env.kcap_home.join("server/kcap.db").exists());
}
