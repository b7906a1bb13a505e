//! Real processes against real faults on loopback: connections cut anywhere, a server answering
//! 5xx/408/429, hanging past the timeout or slow, the finalizer killed at random points, and a
//! transcript that grows, or is cut short, while it is being drained. After recovery no line is
//! lost and none is stored twice. Random choices come from a printed seed, fixed per test;
//! `KCAP_FAULT_SEED=<n>` replays one, `KCAP_FAULT_SEED=clock` draws a new one.

mod common;

use std::time::Duration;

use common::chaos::{seed, ChaosProxy, Rng};
use common::*;
use kcap::ids::SessionId;
use kcap::machine::Phase;
use kcap::server::{Fault, Server};

fn finalizer(env: &Env, url: &str, sid: SessionId, path: &std::path::Path) -> tokio::process::Command {
    let mut c = env.kcap(url);
    c.env("KCAP_BATCH_LINES", "100")
        .env("KCAP_DELIVERY_BUDGET_MS", "60000")
        .args(["copilot-finalize", "--foreground", &sid.to_string()])
        .arg(path);
    c
}

async fn resume(env: &Env, url: &str) -> std::process::Output {
    env.kcap(url)
        .args(["finalize", "--resume"])
        .output()
        .await
        .unwrap()
}

#[track_caller]
fn drained(env: &Env, sid: SessionId) {
    let phase = state(&env.store(), sid).phase;
    assert!(
        matches!(phase, Phase::Drained { .. }),
        "{phase:?}\n{}",
        env.log_of(sid)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_cut_anywhere_lose_and_duplicate_nothing() {
    let seed = seed("connections_cut");
    let (env, server) = (Env::new(), server().await);
    // Every connection is cut: within its first 600 KB of requests (batches are about 300 KB)
    // or its first 2 KB of replies (a few hundred bytes each), so both a batch the server never
    // saw and a reply lost after the server stored the batch happen.
    let proxy = ChaosProxy::start(server.addr(), seed, 100, (600_000, 2_000)).await;
    let content = long_transcript(55);
    let (sid, path) = env.session(&content);
    let out = finalizer(&env, &proxy.url(), sid, &path).output().await.unwrap();
    assert!(out.status.success(), "seed {seed}: {out:?}");
    drained(&env, sid);
    assert_exactly_once(&server, sid, &content);
    assert!(proxy.cuts() > 0, "seed {seed}: no connection was cut");
    eprintln!(
        "{} cuts; {} lines stored, then received again after a lost reply",
        proxy.cuts(),
        server.session(sid).duplicates
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_slowness_and_hangs_are_retried_without_loss() {
    let seed = seed("server_errors");
    let mut rng = Rng(seed | 1);
    let (env, server) = (Env::new(), server().await);
    let script: Vec<Fault> = (0..20)
        .map(|_| match rng.below(10) {
            0 => Fault::Status(500),
            1 => Fault::Status(502),
            2 => Fault::Status(503),
            3 => Fault::Status(504),
            4 => Fault::Status(408),
            5 => Fault::Status(429),
            6 => Fault::Hang,
            _ => Fault::Delay(Duration::from_millis(rng.below(400))),
        })
        .collect();
    server.inject(script.clone());
    let content = long_transcript(55);
    let (sid, path) = env.session(&content);
    let out = finalizer(&env, &server.url(), sid, &path)
        .env("KCAP_HTTP_TIMEOUT_MS", "1500")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "seed {seed} {script:?}: {out:?}");
    drained(&env, sid);
    assert_exactly_once(&server, sid, &content);
    assert_eq!(
        server.pending_faults(),
        0,
        "the drain ended before meeting every fault"
    );
    let failed = latest(&env.store(), sid)
        .log
        .iter()
        .filter(|r| r.input.name() == "DeliveryFailed")
        .count();
    let expected = script.iter().filter(|f| !matches!(f, Fault::Delay(_))).count();
    assert_eq!(
        failed, expected,
        "seed {seed}: each failure is logged once: {script:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_slower_than_the_timeout_parks_then_resumes_without_loss() {
    let (env, server) = (Env::new(), server().await);
    server.inject(std::iter::repeat_n(Fault::Delay(Duration::from_millis(800)), 6));
    let content = transcript();
    let (sid, path) = env.session(&content);
    let out = finalizer(&env, &server.url(), sid, &path)
        .env("KCAP_HTTP_TIMEOUT_MS", "300")
        .env("KCAP_DELIVERY_BUDGET_MS", "1000")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let phase = state(&env.store(), sid).phase;
    assert!(matches!(phase, Phase::Parked { .. }), "{phase:?}");
    assert!(env.log_of(sid).contains("timed out"), "{}", env.log_of(sid));
    // The slow server may have stored batches whose replies the client gave up on.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(resume(&env, &server.url()).await.status.success());
    drained(&env, sid);
    assert_exactly_once(&server, sid, &content);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_points_of_a_large_drain() {
    let seed = seed("kill_9_random");
    let mut rng = Rng(seed | 1);
    let content = long_transcript(55);
    let total = content.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() as u64;
    for round in 0..3 {
        let (env, server) = (Env::new(), server().await);
        let (sid, path) = env.session(&content);
        server.inject(std::iter::repeat_n(
            Fault::Delay(Duration::from_millis(10)),
            100_000,
        ));
        let mut child = finalizer(&env, &server.url(), sid, &path)
            .env("KCAP_BATCH_LINES", "50")
            .spawn()
            .unwrap();
        // Up to three kills, each at a random point of what is left, resuming in between.
        for kill in 0..3 {
            let held = server.session(sid).lines.len() as u64;
            // At least one line past what is held: a running finalizer has recorded its spawn
            // by then. (Killed before that, as the hook never lets happen since it records the
            // spawn first, nothing would be left to resume.)
            let at = (held + 1 + rng.below(total.saturating_sub(held + 1).max(1))).min(total);
            let done = tokio::time::timeout(
                Duration::from_secs(30),
                wait_for("the kill point", Duration::from_secs(30), || {
                    server.session(sid).lines.len() as u64 >= at
                }),
            )
            .await;
            assert!(done.is_ok(), "seed {seed} round {round} kill {kill}");
            child.start_kill().unwrap();
            child.wait().await.unwrap();
            child = env
                .kcap(&server.url())
                .env("KCAP_BATCH_LINES", "50")
                .args(["finalize", "--resume"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
        }
        let out = child.wait_with_output().await.unwrap();
        assert!(out.status.success(), "seed {seed} round {round}: {out:?}");
        if !is_drained(&env.store(), sid) {
            assert!(resume(&env, &server.url()).await.status.success());
        }
        drained(&env, sid);
        assert_exactly_once(&server, sid, &content);
    }
}

/// A finalizer draining about 1,100 lines in 50-line batches, each acknowledged 20 ms late.
struct SlowDrain {
    env: Env,
    server: Server,
    content: Vec<u8>,
    sid: SessionId,
    path: std::path::PathBuf,
    child: tokio::process::Child,
}

async fn slow_drain() -> SlowDrain {
    let (env, server) = (Env::new(), server().await);
    server.inject(std::iter::repeat_n(
        Fault::Delay(Duration::from_millis(20)),
        100_000,
    ));
    let content = long_transcript(20);
    let (sid, path) = env.session(&content);
    let child = finalizer(&env, &server.url(), sid, &path)
        .env("KCAP_BATCH_LINES", "50")
        .spawn()
        .unwrap();
    SlowDrain {
        env,
        server,
        content,
        sid,
        path,
        child,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transcript_that_grows_while_it_is_drained() {
    let SlowDrain {
        env,
        server,
        content,
        sid,
        path,
        child,
    } = slow_drain().await;
    wait_for("the drain to start", Duration::from_secs(30), || {
        !server.session(sid).lines.is_empty()
    })
    .await;
    // While it drains, the session resumes and writes on, a line at a time and, once, half a
    // line that is finished 300 ms later: that half must never be sent as a line of its own.
    let (body, _) = split_at_last_shutdown(&transcript());
    let mut grown = content.clone();
    for (i, line) in body.split_inclusive(|b| *b == b'\n').take(30).enumerate() {
        let chunk = if i == 10 {
            let (a, b) = line.split_at(line.len() / 2);
            append(&path, a);
            tokio::time::sleep(Duration::from_millis(300)).await;
            b
        } else {
            line
        };
        append(&path, chunk);
        grown.extend_from_slice(line);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    drained(&env, sid);
    assert_eq!(server.session(sid).conflicts, 0, "a half-written line was sent");
    let original = content.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
    assert!(
        server.session(sid).lines.len() > original,
        "no line written during the drain was drained with it"
    );
    // What arrived after the drain ended is the live watcher's or import's: import it.
    let out = env
        .kcap(&server.url())
        .args(["import", "--copilot", "--session", &sid.to_string()])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_exactly_once(&server, sid, &grown);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transcript_cut_short_mid_drain_is_detected_and_logged() {
    let SlowDrain {
        env,
        server,
        sid,
        path,
        child,
        ..
    } = slow_drain().await;
    wait_for("part of the drain", Duration::from_secs(30), || {
        server.session(sid).lines.len() >= 200
    })
    .await;
    let before: Vec<_> = server.session(sid).lines.into_iter().collect();
    // Rewritten in place, shorter, with other content.
    let replacement = fixture::short_session();
    std::fs::write(&path, &replacement).unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let log = env.log_of(sid);
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("shorter than the delivered position"), "{log}");
    drained(&env, sid);
    // What was acknowledged stays as it was; the new content's lines under used numbers are
    // kept aside as conflicts, not stored over the old ones.
    let after = server.session(sid);
    for (n, line) in before {
        assert_eq!(after.lines.get(&n), Some(&line), "line {n} changed");
    }
    assert!(after.conflicts > 0, "the rewrite went unnoticed by the server");
}

/// The harness itself: a proxy that never cuts is transparent.
#[tokio::test(flavor = "multi_thread")]
async fn the_chaos_proxy_is_transparent_when_it_does_not_cut() {
    let (env, server): (Env, Server) = (Env::new(), server().await);
    let proxy = ChaosProxy::start(server.addr(), 7, 0, (1, 1)).await;
    let content = transcript();
    let (sid, path) = env.session(&content);
    let out = finalizer(&env, &proxy.url(), sid, &path).output().await.unwrap();
    assert!(out.status.success());
    assert_eq!(proxy.cuts(), 0);
    assert_exactly_once(&server, sid, &content);
    assert_eq!(server.session(sid).duplicates, 0);
}
