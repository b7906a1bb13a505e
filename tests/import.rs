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

    let out = env
        .kcap(&server.url())
        .args(["import", "--copilot"])
        .output()
        .await
        .unwrap();
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
    let again = env
        .kcap(&server.url())
        .args(["import", "--copilot"])
        .output()
        .await
        .unwrap();
    assert!(
        summary_of(&again).contains("imported 3 sessions: 0 lines sent, 0 new"),
        "{}",
        summary_of(&again)
    );

    // --session narrows it; an unknown one is an error.
    let ((one, _), _) = &sessions[0];
    let out = env
        .kcap(&server.url())
        .args(["import", "--copilot", "--session", &one.to_string()])
        .output()
        .await
        .unwrap();
    assert!(summary_of(&out).contains("imported 1 sessions"));
    let out = env
        .kcap(&server.url())
        .args(["import", "--copilot", "--session", "../../etc"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn finalizer_then_import_and_import_then_finalizer_store_each_line_once() {
    let (env, server) = (Env::new(), server().await);
    let content = transcript();
    let (a, path_a) = env.session(&content);
    let out = env
        .kcap(&server.url())
        .args(["copilot-finalize", "--foreground", &a.to_string()])
        .arg(&path_a)
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let (b, path_b) = env.session(&content);
    let out = env
        .kcap(&server.url())
        .args(["import", "--copilot", "--session", &b.to_string()])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let out = env
        .kcap(&server.url())
        .args(["copilot-finalize", "--foreground", &b.to_string()])
        .arg(&path_b)
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let out = env
        .kcap(&server.url())
        .args(["import", "--copilot"])
        .output()
        .await
        .unwrap();
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
