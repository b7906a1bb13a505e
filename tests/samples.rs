//! Every real transcript in ../shared/research-samples/copilot (skipped with a message when they
//! are not beside the checkout; see tests/common/samples.rs) drives the finalizer end to end
//! (in process, against a loopback server): lines stored once, and the machine ends the way the
//! file's last line says it should.

mod common;

use std::time::Duration;

use common::*;
use kcap::effects::interpreter::Delivery;
use kcap::effects::lines::Limits;
use kcap::effects::session::{record_spawn, RunOutcome, SessionRun, Start};
use kcap::machine::terminal::{classify, is_blank, LineKind};
use kcap::machine::{Outcome, Phase, Timings};

fn ends_with_shutdown(content: &[u8]) -> bool {
    content
        .split(|b| *b == b'\n')
        .rev()
        .find(|l| !is_blank(l))
        .is_some_and(|l| classify(l) == LineKind::Shutdown)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_sample_is_delivered_exactly_once() {
    let Some(samples) = real_samples("every_sample_is_delivered_exactly_once") else {
        return;
    };
    let mut names: Vec<String> = std::fs::read_dir(samples)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 10,
        "expected the research samples, found {names:?}"
    );

    let server = server().await;
    let env = Env::new();
    let store = env.store();
    let delivery = Delivery {
        client: kcap::effects::client::Client::new(&server.url(), None, Duration::from_secs(5)).unwrap(),
        limits: Limits {
            max_lines: 7,
            max_bytes: 64 * 1024,
        },
    };
    let timings = Timings {
        poll_ms: 20,
        shutdown_budget_ms: 300,
        ..Timings::default()
    };
    for name in names {
        let content = sample(&name);
        let (sid, path) = env.session(&content);
        record_spawn(&store, sid, &path, timings, kcap::config::now_ms())
            .await
            .unwrap();
        let run = SessionRun {
            store: &store,
            delivery: &delivery,
            session: sid,
            wait_for_lease_until: None,
            poll: Duration::from_millis(20),
        };
        let outcome = run.run(Start::Spawn).await.unwrap();
        let RunOutcome::Ran { state, .. } = outcome else {
            panic!("{name}: {outcome:?}")
        };
        let Phase::Drained { outcome, .. } = state.phase else {
            panic!("{name}: {state:?}")
        };
        if ends_with_shutdown(&content) {
            assert!(matches!(outcome, Outcome::Shutdown { .. }), "{name}: {outcome:?}");
        } else {
            assert_eq!(outcome, Outcome::TimedOut, "{name}");
        }
        assert_exactly_once(&server, sid, &content);
        // Running it again finds it drained and sends nothing.
        let again = run.run(Start::Resume).await.unwrap();
        assert!(
            matches!(again, RunOutcome::AlreadyDrained { .. }),
            "{name}: {again:?}"
        );
    }
}
