//! `kcap status` and `kcap doctor` say why a finalizer is parked and when it is retried;
//! `kcap sessions` lists newest first, within --limit, with "-" for what the server does not say.

mod common;

use std::time::Duration;

use common::*;
use kcap::machine::Phase;

#[tokio::test(flavor = "multi_thread")]
async fn a_parked_finalizer_says_why_and_until_when() {
    let env = Env::new();
    let url = format!("http://{}", free_port());
    let (sid, path) = env.session(&transcript());
    env.kcap(&url)
        .env("KCAP_DELIVERY_BUDGET_MS", "600")
        .env("KCAP_PARK_RETRY_MS", "90000")
        .args(["copilot-finalize", "--foreground", &sid.to_string()])
        .arg(&path)
        .status()
        .await
        .unwrap();
    assert!(matches!(state(&env.store(), sid).phase, Phase::Parked { .. }));
    let out = env.kcap(&url).arg("status").output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{sid} parked: server unreachable"))
            && text.contains("retried by the next hook's sweep after")
            && text.contains("(in 1m"),
        "{text}"
    );
    let json = env.kcap(&url).args(["status", "--json"]).output().await.unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(rows[0]["parked_reason"].as_str().unwrap().contains("unreachable"));
    assert!(rows[0]["retry_at"].is_string());
    let doctor = env.kcap(&url).arg("doctor").output().await.unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert_eq!(doctor.status.code(), Some(1));
    assert!(
        text.contains(&format!("finalizer {sid} parked: server unreachable")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_newest_first_within_the_limit() {
    let (env, server) = (Env::new(), server().await);
    let mut sids = Vec::new();
    for _ in 0..3 {
        let (sid, path) = env.session(&fixture::short_session());
        let out = env
            .kcap(&server.url())
            .args(["copilot-finalize", "--foreground", &sid.to_string()])
            .arg(&path)
            .output()
            .await
            .unwrap();
        assert!(out.status.success());
        sids.push(sid);
        // Distinct first-seen times, so "newest" is well defined.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = env
        .kcap(&server.url())
        .args(["sessions", "--limit", "2"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let header = text.lines().next().unwrap();
    for column in [
        "SESSION",
        "STARTED",
        "AGENT",
        "MACHINE",
        "REPOSITORY / CWD",
        "LINES",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let rows: Vec<&str> = text.lines().skip(1).filter(|l| !l.starts_with('(')).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows[0].starts_with(&sids[2].to_string()), "{text}");
    assert!(rows[1].starts_with(&sids[1].to_string()), "{text}");
    assert!(
        text.contains("(2 of 3 sessions, newest first; --all shows every one)"),
        "{text}"
    );
    assert!(!text.split_whitespace().any(|field| field == "-0"), "{text}");
    let all = env
        .kcap(&server.url())
        .args(["sessions", "--all"])
        .output()
        .await
        .unwrap();
    let all = String::from_utf8_lossy(&all.stdout);
    assert_eq!(all.lines().count(), 4, "{all}");
    let bad = env
        .kcap(&server.url())
        .args(["sessions", "--limit", "-0"])
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    // --limit 0 shows no rows, but must not claim the server is empty.
    let none = env
        .kcap(&server.url())
        .args(["sessions", "--limit", "0"])
        .output()
        .await
        .unwrap();
    let none = String::from_utf8_lossy(&none.stdout);
    assert!(!none.contains("holds no sessions"), "{none}");
    assert!(none.contains("(0 of 3 sessions"), "{none}");
}
