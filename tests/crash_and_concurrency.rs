//! kill -9 in the middle of a multi-batch drain, and many kcap processes on one store.

mod common;

use std::time::Duration;

use common::*;
use kcap::machine::Phase;
use kcap::server::Fault;

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_drain_then_resume_stores_every_line_once() {
    let content = long_transcript(55);
    // Kill after a few batches, after many, and (third) while a batch is in flight.
    for kill_after_lines in [150u64, 1_200, 2_400] {
        let (env, server) = (Env::new(), server().await);
        let (sid, path) = env.session(&content);
        // Slow acknowledgements keep the drain in progress long enough to kill it anywhere.
        server.inject(std::iter::repeat_n(
            Fault::Delay(Duration::from_millis(15)),
            10_000,
        ));
        let mut child = env
            .kcap(&server.url())
            .env("KCAP_BATCH_LINES", "50")
            .args(["copilot-finalize", "--foreground", &sid.to_string()])
            .arg(&path)
            .spawn()
            .unwrap();
        wait_for("part of the drain", Duration::from_secs(30), || {
            server.session(sid).lines.len() as u64 >= kill_after_lines
        })
        .await;
        child.start_kill().unwrap(); // SIGKILL
        child.wait().await.unwrap();
        let held_at_kill = server.session(sid).lines.len();
        assert!(
            held_at_kill < content.split(|b| *b == b'\n').count() - 1,
            "the drain finished before the kill"
        );
        let interrupted = state(&env.store(), sid);
        assert!(
            matches!(interrupted.phase, Phase::ShutdownSeen { .. }),
            "{interrupted:?}"
        );

        let out = env
            .kcap(&server.url())
            .env("KCAP_BATCH_LINES", "500")
            .args(["finalize", "--resume"])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(matches!(state(&env.store(), sid).phase, Phase::Drained { .. }));
        assert_exactly_once(&server, sid, &content);
        // The resume started at the watermark or the server's last-line, not from the top.
        assert!(
            server.session(sid).duplicates <= 50,
            "resume resent {} lines",
            server.session(sid).duplicates
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_finalizers_on_eight_sessions_share_one_store() {
    let (env, server) = (Env::new(), server().await);
    let content = transcript();
    let sessions: Vec<_> = (0..8).map(|_| env.session(&content)).collect();
    let children: Vec<_> = sessions
        .iter()
        .map(|(sid, path)| {
            env.kcap(&server.url())
                .env("KCAP_BATCH_LINES", "5")
                .args(["copilot-finalize", "--foreground", &sid.to_string()])
                .arg(path)
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        assert!(child.wait_with_output().await.unwrap().status.success());
    }
    for (sid, _) in &sessions {
        assert!(
            matches!(state(&env.store(), *sid).phase, Phase::Drained { .. }),
            "{sid}"
        );
        assert_exactly_once(&server, *sid, &content);
        let log = latest(&env.store(), *sid).log;
        let seqs: Vec<u64> = log.iter().map(|r| r.seq).collect();
        assert_eq!(
            seqs,
            (0..log.len() as u64).collect::<Vec<_>>(),
            "log of {sid} has gaps or repeats"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_processes_on_one_session_run_its_machine_once() {
    let (env, server) = (Env::new(), server().await);
    let content = transcript();
    let (sid, path) = env.session(&content);
    // A spawn record with nobody running it yet, as a crashed hook would leave it.
    env.store()
        .spawn_machine(
            sid,
            &path,
            kcap::machine::Timings::default(),
            kcap::config::now_ms(),
        )
        .unwrap();
    server.inject(std::iter::repeat_n(Fault::Delay(Duration::from_millis(20)), 100));
    let children: Vec<_> = (0..8)
        .map(|_| {
            env.kcap(&server.url())
                .env("KCAP_BATCH_LINES", "5")
                .args(["finalize", "--session", &sid.to_string()])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut outputs = Vec::new();
    for child in children {
        let out = child.wait_with_output().await.unwrap();
        assert!(out.status.success(), "{out:?}");
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let ran = outputs.iter().filter(|o| o.contains("drained:")).count();
    assert_eq!(ran, 1, "exactly one process runs the machine: {outputs:#?}");
    let record = latest(&env.store(), sid);
    let starts = record
        .log
        .iter()
        .filter(|r| matches!(r.input.name(), "Started" | "Resumed"))
        .count();
    assert_eq!(starts, 1);
    assert_exactly_once(&server, sid, &content);
}
