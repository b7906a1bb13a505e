//! `kcap import --copilot`: batch delivery with the same ids and watermarks as live capture.

mod common;

use common::*;

fn summary_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn imports_every_session_once_and_a_rerun_adds_nothing() {
    let (env, server) = (Env::new(), server().await);
    let corrupt = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/corpus/transcripts/malformed-lines.jsonl"
    ))
    .unwrap();
    let sessions: Vec<_> = [transcript(), fixture::short_session(), corrupt]
        .into_iter()
        .map(|c| (env.session(&c), c))
        .collect();
    // Things that are not sessions are reported and never read.
    std::fs::create_dir_all(env.copilot_home.join("session-state/not-a-session")).unwrap();
    std::fs::write(
        env.copilot_home.join("session-state/not-a-session/events.jsonl"),
        b"{}\n",
    )
    .unwrap();
    std::fs::create_dir_all(
        env.copilot_home
            .join("session-state/6f1c2d3e-4b5a-4c6d-8e7f-901a2b3c4d5e"),
    )
    .unwrap();

    let out = env.run(&server.url(), &["import", "--copilot"]).await;
    assert!(out.status.success(), "{out:?}");
    let total: usize = sessions
        .iter()
        .map(|(_, c)| {
            c.split(|b| *b == b'\n')
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .count()
        })
        .sum();
    let text = summary_of(&out);
    assert!(
        text.contains(&format!(
            "imported 3 sessions: {total} lines sent, {total} new, 0 already"
        )),
        "{text}"
    );
    assert!(
        text.contains("not-a-session: not a session id") && text.contains("no events.jsonl"),
        "{text}"
    );
    for ((sid, _), content) in &sessions {
        assert_exactly_once(&server, *sid, content);
    }
    let again = env.run(&server.url(), &["import", "--copilot"]).await;
    assert!(
        summary_of(&again).contains("imported 3 sessions: 0 lines sent, 0 new"),
        "{}",
        summary_of(&again)
    );

    // --session narrows it; an unknown one is an error.
    let ((one, _), _) = &sessions[0];
    let out = env
        .run(
            &server.url(),
            &["import", "--copilot", "--session", &one.to_string()],
        )
        .await;
    assert!(summary_of(&out).contains("imported 1 sessions"));
    let out = env
        .run(&server.url(), &["import", "--copilot", "--session", "../../etc"])
        .await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn finalizer_then_import_and_import_then_finalizer_store_each_line_once() {
    let (env, server) = (Env::new(), server().await);
    let content = transcript();
    let (a, path_a) = env.session(&content);
    let out = env
        .run(
            &server.url(),
            &[
                "copilot-finalize",
                "--foreground",
                &a.to_string(),
                path_a.to_str().unwrap(),
            ],
        )
        .await;
    assert!(out.status.success());
    let (b, path_b) = env.session(&content);
    let out = env
        .run(
            &server.url(),
            &["import", "--copilot", "--session", &b.to_string()],
        )
        .await;
    assert!(out.status.success());
    let out = env
        .run(
            &server.url(),
            &[
                "copilot-finalize",
                "--foreground",
                &b.to_string(),
                path_b.to_str().unwrap(),
            ],
        )
        .await;
    assert!(out.status.success());
    let out = env.run(&server.url(), &["import", "--copilot"]).await;
    assert!(summary_of(&out).contains("0 lines sent"), "{}", summary_of(&out));
    for sid in [a, b] {
        assert_exactly_once(&server, sid, &content);
        assert_eq!(
            server.session(sid).duplicates,
            0,
            "a delivery path resent what another had delivered"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_counts_what_would_go_and_sends_nothing() {
    let (env, server) = (Env::new(), server().await);
    let content = transcript();
    let (sid, _) = env.session(&content);
    let out = env.run(&server.url(), &["import", "--dry-run"]).await;
    assert!(out.status.success(), "{out:?}");
    let lines = content.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
    let redacted_bytes: usize = String::from_utf8_lossy(&content)
        .lines()
        .map(|l| redacted(l).len())
        .sum();
    let text = summary_of(&out);
    assert!(
        text.contains(&format!(
            "dry run, nothing sent: 1 sessions, {lines} lines, {redacted_bytes} bytes would be sent; 1 lines with secrets redacted"
        )),
        "{text}"
    );
    assert!(server.session(sid).lines.is_empty(), "a dry run sent lines");
    assert_eq!(
        env.store().watermark(sid).unwrap(),
        None,
        "a dry run moved the watermark"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn since_leaves_out_older_transcripts() {
    let (env, server) = (Env::new(), server().await);
    let (old, old_path) = env.session(&transcript());
    let (new, _) = env.session(&fixture::short_session());
    let week_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(8 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&old_path)
        .unwrap()
        .set_modified(week_ago)
        .unwrap();
    let out = env.run(&server.url(), &["import", "--since", "7d"]).await;
    assert!(out.status.success(), "{out:?}");
    let text = summary_of(&out);
    assert!(
        text.contains("imported 1 sessions") && text.contains("1 sessions last written before --since"),
        "{text}"
    );
    assert!(server.session(old).lines.is_empty());
    assert_exactly_once(&server, new, &fixture::short_session());
    let bad = env
        .run(&server.url(), &["import", "--since", "last tuesday"])
        .await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a date"));
}

/// A server that is down when the import starts and up a moment later: the import waits it out
/// with backoff, like live delivery, instead of marking the session failed.
#[tokio::test(flavor = "multi_thread")]
async fn import_retries_until_the_server_is_back() {
    let env = Env::new();
    let addr = free_port();
    let content = transcript();
    let (sid, _) = env.session(&content);
    let child = env
        .kcap(&format!("http://{addr}"))
        .args(["import"])
        .env("KCAP_DELIVERY_BUDGET_MS", "20000")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let server = kcap::server::Server::start(addr, None).await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = summary_of(&out);
    assert!(text.contains("0 failed (") && text.contains("retries)"), "{text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("retrying in"),
        "{out:?}"
    );
    assert_exactly_once(&server, sid, &content);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_samples_import_once() {
    let Some(dir) = real_samples("the_real_samples_import_once") else {
        return;
    };
    let (env, server) = (Env::new(), server().await);
    let mut sessions = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".jsonl") {
            let content = sample(&name);
            sessions.push((env.session(&content).0, content));
        }
    }
    let out = env.run(&server.url(), &["import"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(summary_of(&out).contains(&format!("imported {} sessions", sessions.len())));
    for (sid, content) in &sessions {
        assert_exactly_once(&server, *sid, content);
    }
}

/// A server that stays down: the first session waits out the budget, the others are not tried
/// (each would wait as long again: two minutes per session by default) and are reported.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_stays_down_costs_one_budget_not_one_per_session() {
    let env = Env::new();
    let (a, _) = env.session(&transcript());
    let (b, _) = env.session(&fixture::short_session());
    let out = env
        .kcap(&format!("http://{}", free_port()))
        .args(["import"])
        .env("KCAP_DELIVERY_BUDGET_MS", "400")
        .env("KCAP_RETRY_INITIAL_MS", "50")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = summary_of(&out);
    assert!(
        text.contains("imported 2 sessions") && text.contains("2 failed"),
        "{text}"
    );
    assert_eq!(
        text.matches("not tried, the server stopped answering").count(),
        1,
        "{text}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let retried: Vec<&str> = stderr.lines().filter(|l| l.contains("retrying in")).collect();
    assert!(!retried.is_empty(), "{stderr}");
    let first = retried[0].split(':').next().unwrap();
    assert!(retried.iter().all(|l| l.starts_with(first)), "{stderr}");
    assert!(first == a.to_string() || first == b.to_string(), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_summary_reports_lines_the_server_holds_with_other_content() {
    // A transcript replaced after its import (a new file under the same session, one line
    // rewritten) is read again from line 0: the server keeps what it holds, sets the rewritten
    // line aside as a conflict, and the import's summary says so.
    let (env, server) = (Env::new(), server().await);
    let (_, path) = env.session(b"{\"type\":\"user.message\",\"data\":{\"content\":\"a\"}}\n{\"type\":\"assistant.message\",\"data\":{\"content\":\"b\"}}\n");
    let out = env.run(&server.url(), &["import", "--copilot"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(!summary_of(&out).contains("conflicting"), "{}", summary_of(&out));
    let replacement = path.with_extension("new");
    std::fs::write(
        &replacement,
        b"{\"type\":\"user.message\",\"data\":{\"content\":\"a\"}}\n{\"type\":\"assistant.message\",\"data\":{\"content\":\"other\"}}\n{\"type\":\"user.message\",\"data\":{\"content\":\"c\"}}\n",
    )
    .unwrap();
    std::fs::rename(&replacement, &path).unwrap();
    let out = env.run(&server.url(), &["import", "--copilot"]).await;
    assert!(out.status.success(), "{out:?}");
    let text = summary_of(&out);
    assert!(
        text.contains("3 lines sent, 1 new, 1 already on the server, 1 conflicting"),
        "{text}"
    );
}
