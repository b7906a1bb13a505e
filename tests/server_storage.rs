//! One conformance suite for every storage backend (SQLite, and PostgreSQL on a throwaway
//! cluster), then PostgreSQL's own promise: replicas on one database keep each line once.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::postgres::Cluster;
use kcap::ids::{event_id, SessionId};
use kcap::server::storage::{
    Backend, Batch, IncomingLine, Lifecycle, LifecycleKind, Principal, Storage, StorageError,
};
use kcap::server::{Limits, Options, Server};

fn line(sid: SessionId, n: u64, text: &str) -> IncomingLine {
    IncomingLine {
        number: n,
        id: event_id(&sid, n, text.as_bytes()),
        text: text.to_string(),
    }
}

fn batch(sid: SessionId, lines: Vec<IncomingLine>, blanks: Vec<u64>, writer: &Principal) -> Batch {
    Batch {
        session: sid,
        lines,
        blanks,
        vendor: Some("copilot".into()),
        repository: Some("org/repo".into()),
        writer: writer.clone(),
        now: 1_000,
    }
}

fn texts(sid: SessionId, range: std::ops::Range<u64>) -> Vec<IncomingLine> {
    range
        .map(|n| line(sid, n, &format!(r#"{{"type":"x","n":{n}}}"#)))
        .collect()
}

/// Every rule, against one backend.
fn conformance(b: Arc<dyn Backend>) {
    let anon = Principal::Anonymous;

    // New, duplicate, conflict; last-line follows the contiguous frontier.
    let sid = SessionId::new_random();
    assert_eq!(b.last_line(sid).unwrap(), -1);
    let r = b.ingest(&batch(sid, texts(sid, 0..100), vec![], &anon)).unwrap();
    assert_eq!((r.new, r.duplicates), (100, 0));
    let r = b.ingest(&batch(sid, texts(sid, 50..150), vec![], &anon)).unwrap();
    assert_eq!((r.new, r.duplicates, r.conflicts), (50, 50, 0));
    assert_eq!(b.last_line(sid).unwrap(), 149);
    let r = b
        .ingest(&batch(
            sid,
            vec![line(sid, 7, r#"{"type":"rewritten"}"#)],
            vec![],
            &anon,
        ))
        .unwrap();
    assert_eq!((r.new, r.duplicates, r.conflicts), (0, 0, 1));
    let held = b.lines(sid).unwrap();
    assert_eq!(held.lines.len(), 150);
    assert_eq!(held.conflicts, 1);
    assert_eq!(held.duplicates, 50);
    assert_eq!(
        held.lines[&7].text, r#"{"type":"x","n":7}"#,
        "a conflict never overwrites"
    );
    assert_eq!(held.lines[&7].id, event_id(&sid, 7, br#"{"type":"x","n":7}"#));

    // Gaps stop last-line; blanks in the client's contiguous run close them.
    let sid = SessionId::new_random();
    let mut lines = texts(sid, 0..2);
    lines.extend(texts(sid, 3..5));
    b.ingest(&batch(sid, lines, vec![], &anon)).unwrap();
    assert_eq!(b.last_line(sid).unwrap(), 1);
    b.ingest(&batch(sid, texts(sid, 6..7), vec![5], &anon)).unwrap();
    assert_eq!(b.last_line(sid).unwrap(), 1, "line 2 is still missing");
    b.ingest(&batch(sid, texts(sid, 2..3), vec![], &anon)).unwrap();
    assert_eq!(b.last_line(sid).unwrap(), 6);
    // Trailing blanks count only once a line follows them.
    b.ingest(&batch(sid, vec![], vec![7, 8], &anon)).unwrap();
    assert_eq!(b.last_line(sid).unwrap(), 6);
    b.ingest(&batch(sid, texts(sid, 9..10), vec![], &anon)).unwrap();
    assert_eq!(b.last_line(sid).unwrap(), 9);
    assert_eq!(
        b.lines(sid).unwrap().lines.len(),
        7,
        "blank markers are not lines"
    );

    // Poisoning: blanks alone, or blanks far outside the batch, never move last-line.
    let sid = SessionId::new_random();
    b.ingest(&batch(sid, vec![], (0..100).collect(), &anon)).unwrap();
    assert_eq!(b.last_line(sid).unwrap(), -1);
    b.ingest(&batch(sid, texts(sid, 500..501), (0..100).collect(), &anon))
        .unwrap();
    assert_eq!(b.last_line(sid).unwrap(), -1);
    // ...and a real line takes the place of a blank marker instead of being refused.
    let r = b.ingest(&batch(sid, texts(sid, 0..101), vec![], &anon)).unwrap();
    assert_eq!(r.new, 101);
    assert_eq!(b.last_line(sid).unwrap(), 100);
    let flood: Vec<u64> = (1000..1000 + 100_001).collect();
    assert!(matches!(
        b.ingest(&batch(sid, texts(sid, 999..1000), flood, &anon)),
        Err(StorageError::Invalid(_))
    ));

    // Bad batches are refused whole.
    let sid = SessionId::new_random();
    let mut twice = texts(sid, 0..2);
    twice.push(line(sid, 1, "{}"));
    assert!(matches!(
        b.ingest(&batch(sid, twice, vec![], &anon)),
        Err(StorageError::Invalid(_))
    ));
    assert!(matches!(
        b.ingest(&batch(sid, vec![line(sid, u64::MAX, "{}")], vec![], &anon)),
        Err(StorageError::Invalid(_))
    ));
    assert!(b.lines(sid).unwrap().lines.is_empty());

    // Ownership: the first token owns the session; others get Forbidden; admin may write.
    let (alice, bob) = (Principal::Token("alice".into()), Principal::Token("bob".into()));
    let sid = SessionId::new_random();
    b.ingest(&batch(sid, texts(sid, 0..3), vec![], &alice)).unwrap();
    assert!(matches!(
        b.ingest(&batch(sid, texts(sid, 3..4), vec![], &bob)),
        Err(StorageError::Forbidden(_))
    ));
    let end = Lifecycle {
        received_at: 2_000,
        reason: Some("user_exit".into()),
        cwd: Some("/w".into()),
        detail: None,
    };
    assert!(matches!(
        b.record_lifecycle(sid, LifecycleKind::End, &end, &bob),
        Err(StorageError::Forbidden(_))
    ));
    b.ingest(&batch(sid, texts(sid, 3..4), vec![], &Principal::Admin))
        .unwrap();
    assert_eq!(b.last_line(sid).unwrap(), 3);

    // A session written before the server had tokens (no owner) cannot be taken over by a
    // token, not even the first to ask; only the admin token writes to it, and it stays
    // unowned.
    let legacy = SessionId::new_random();
    b.ingest(&batch(legacy, texts(legacy, 0..2), vec![], &anon))
        .unwrap();
    for who in [&alice, &bob] {
        assert!(matches!(
            b.ingest(&batch(legacy, texts(legacy, 2..3), vec![], who)),
            Err(StorageError::Forbidden(_))
        ));
        assert!(matches!(
            b.record_lifecycle(legacy, LifecycleKind::End, &end, who),
            Err(StorageError::Forbidden(_))
        ));
    }
    assert_eq!(
        b.last_line(legacy).unwrap(),
        1,
        "nothing of the refused batches stored"
    );
    b.ingest(&batch(legacy, texts(legacy, 2..3), vec![], &Principal::Admin))
        .unwrap();
    assert_eq!(b.last_line(legacy).unwrap(), 2);
    assert_eq!(b.summary(legacy).unwrap().unwrap().owner, None);

    // Lifecycle and metadata: notifications apart, every listed field.
    let start = Lifecycle {
        received_at: 500,
        reason: None,
        cwd: Some("/w".into()),
        detail: Some("startup".into()),
    };
    b.record_lifecycle(sid, LifecycleKind::Start, &start, &alice)
        .unwrap();
    b.record_lifecycle(sid, LifecycleKind::End, &end, &alice).unwrap();
    for i in 0..3 {
        let note = Lifecycle {
            received_at: 3_000 + i,
            detail: Some(format!("note {i}")),
            ..Lifecycle::default()
        };
        b.record_lifecycle(sid, LifecycleKind::Notification, &note, &alice)
            .unwrap();
    }
    let s = b.summary(sid).unwrap().expect("summary");
    assert_eq!(s.lines_stored, 4);
    assert_eq!(s.owner.as_deref(), Some("alice"));
    assert_eq!(s.agent.as_deref(), Some("copilot"));
    assert_eq!(s.repository.as_deref(), Some("org/repo"));
    assert_eq!(s.cwd.as_deref(), Some("/w"));
    assert_eq!((s.started_at, s.ended_at), (Some(500), Some(2_000)));
    assert_eq!(s.notifications, 3);
    assert_eq!(s.last_notification.unwrap().detail.as_deref(), Some("note 2"));
    assert!(b.summary(SessionId::new_random()).unwrap().is_none());
    assert!(b.session_ids().unwrap().contains(&sid));
    let listed = b.summaries(Some(2)).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].session_id, sid, "most recently active first");

    // Usage comes from shutdown lines only.
    let sid = SessionId::new_random();
    let shutdown = r#"{"type":"session.shutdown","data":{"totalPremiumRequests":3,"modelMetrics":{"m":{"requests":{"count":2},"usage":{"inputTokens":10}}}}}"#;
    let grep = r#"{"type":"tool.result","data":{"out":"session.shutdown session.usage_checkpoint"}}"#;
    b.ingest(&batch(
        sid,
        vec![line(sid, 0, grep), line(sid, 1, shutdown)],
        vec![],
        &anon,
    ))
    .unwrap();
    let u = b.summary(sid).unwrap().unwrap().usage;
    assert_eq!((u.shutdowns, u.premium_requests), (1, 3.0));
    assert_eq!(u.models["m"].input_tokens, 10.0);

    // A resumed session whose checkpoint carries an overflowing counter: the checkpoint still
    // counts (shutdown totals are then read as cumulative), as a shutdown's saturates.
    let sid = SessionId::new_random();
    let checkpoint = r#"{"type":"session.usage_checkpoint","data":{"inputTokens":1e400}}"#;
    let second = shutdown.replace(":10}", ":25}").replace(":3,", ":5,");
    b.ingest(&batch(
        sid,
        vec![
            line(sid, 0, shutdown),
            line(sid, 1, checkpoint),
            line(sid, 2, &second),
        ],
        vec![],
        &anon,
    ))
    .unwrap();
    let u = b.summary(sid).unwrap().unwrap().usage;
    assert_eq!(u.readings, vec!["cumulative".to_string()], "{u:?}");
    assert_eq!(u.models["m"].input_tokens, 25.0);

    // Tokens: stored by hash, names unique.
    let (h1, h2) = ([1u8; 32], [2u8; 32]);
    assert!(!b.has_tokens().unwrap() || b.token_name(&h1).unwrap().is_none());
    b.add_token("laptop", &h1, 1).unwrap();
    assert!(matches!(
        b.add_token("laptop", &h2, 1),
        Err(StorageError::Exists(_))
    ));
    assert_eq!(b.token_name(&h1).unwrap().as_deref(), Some("laptop"));
    assert_eq!(b.token_name(&h2).unwrap(), None);
    assert!(b.has_tokens().unwrap());
    // Revoked: no longer authenticates, still listed (with when), name still taken, and auth
    // stays on (has_tokens) even with every token revoked.
    b.add_token("phone", &h2, 2).unwrap();
    assert!(b.revoke_token("laptop", 5).unwrap());
    assert!(!b.revoke_token("laptop", 6).unwrap(), "already revoked");
    assert!(matches!(
        b.revoke_token("nobody", 5),
        Err(StorageError::Invalid(_))
    ));
    assert_eq!(b.token_name(&h1).unwrap(), None);
    assert_eq!(b.token_name(&h2).unwrap().as_deref(), Some("phone"));
    let listed: Vec<_> = b
        .tokens()
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.created_at, t.revoked_at))
        .collect();
    assert_eq!(
        listed,
        [("laptop".to_string(), 1, Some(5)), ("phone".to_string(), 2, None)]
    );
    assert!(matches!(
        b.add_token("laptop", &[3u8; 32], 7),
        Err(StorageError::Exists(_))
    ));
    b.revoke_token("phone", 8).unwrap();
    assert!(b.has_tokens().unwrap(), "revoking every token keeps auth on");

    // Eight writers race on overlapping batches of one session: each line stored once.
    let sid = SessionId::new_random();
    let news: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8u64)
            .map(|w| {
                let b = b.clone();
                s.spawn(move || {
                    let mut new = 0;
                    for k in 0..20u64 {
                        let from = ((k + w) % 20) * 50;
                        let r = b
                            .ingest(&batch(
                                sid,
                                texts(sid, from..from + 100),
                                vec![],
                                &Principal::Anonymous,
                            ))
                            .unwrap();
                        new += r.new;
                    }
                    new
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(news.iter().sum::<u64>(), 1_050, "each line is new exactly once");
    assert_eq!(b.lines(sid).unwrap().lines.len(), 1_050);
    assert_eq!(b.last_line(sid).unwrap(), 1_049);
}

#[test]
fn two_servers_starting_at_once_on_one_fresh_sqlite_database_both_open_it() {
    // Each round a fresh database and two openers released together; before the version was
    // read under the migration lock, the slower one failed on tables the other had created.
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kcap.db");
        let start = std::sync::Barrier::new(2);
        let opened: Vec<Result<(), StorageError>> = std::thread::scope(|s| {
            let openers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        Storage::sqlite(&path).map(drop)
                    })
                })
                .collect();
            openers.into_iter().map(|o| o.join().unwrap()).collect()
        });
        for o in opened {
            assert!(o.is_ok(), "round {round}: {o:?}");
        }
    }
}

#[test]
fn conformance_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::sqlite(&dir.path().join("kcap.db")).unwrap();
    conformance(backend(&storage));
    // Reopening migrates nothing and keeps everything.
    let again = Storage::sqlite(&dir.path().join("kcap.db")).unwrap();
    assert!(!again.backend().session_ids().unwrap().is_empty());
}

#[test]
fn conformance_on_postgres() {
    let Some(cluster) = Cluster::start("conformance_on_postgres") else {
        return;
    };
    let url = cluster.database();
    let storage = Storage::postgres(&url).unwrap();
    conformance(backend(&storage));
    // A second replica on the same database migrates nothing and sees everything.
    let replica = Storage::postgres(&url).unwrap();
    assert_eq!(
        replica.backend().session_ids().unwrap().len(),
        storage.backend().session_ids().unwrap().len()
    );
}

/// An `Arc<dyn Backend>` view of a storage handle for the threaded checks.
fn backend(storage: &Storage) -> Arc<dyn Backend> {
    struct Shared(Storage);
    impl Backend for Shared {
        fn ingest(&self, b: &Batch) -> Result<kcap::protocol::IngestReply, StorageError> {
            self.0.backend().ingest(b)
        }
        fn last_line(&self, s: SessionId) -> Result<i64, StorageError> {
            self.0.backend().last_line(s)
        }
        fn record_lifecycle(
            &self,
            s: SessionId,
            k: LifecycleKind,
            e: &Lifecycle,
            w: &Principal,
        ) -> Result<(), StorageError> {
            self.0.backend().record_lifecycle(s, k, e, w)
        }
        fn summary(&self, s: SessionId) -> Result<Option<kcap::server::SessionSummary>, StorageError> {
            self.0.backend().summary(s)
        }
        fn summaries(&self, l: Option<u64>) -> Result<Vec<kcap::server::SessionSummary>, StorageError> {
            self.0.backend().summaries(l)
        }
        fn lines(&self, s: SessionId) -> Result<kcap::server::SessionLines, StorageError> {
            self.0.backend().lines(s)
        }
        fn session_ids(&self) -> Result<Vec<SessionId>, StorageError> {
            self.0.backend().session_ids()
        }
        fn add_token(&self, n: &str, h: &[u8; 32], t: u64) -> Result<(), StorageError> {
            self.0.backend().add_token(n, h, t)
        }
        fn token_name(&self, h: &[u8; 32]) -> Result<Option<String>, StorageError> {
            self.0.backend().token_name(h)
        }
        fn has_tokens(&self) -> Result<bool, StorageError> {
            self.0.backend().has_tokens()
        }
        fn tokens(&self) -> Result<Vec<kcap::server::storage::TokenInfo>, StorageError> {
            self.0.backend().tokens()
        }
        fn revoke_token(&self, n: &str, t: u64) -> Result<bool, StorageError> {
            self.0.backend().revoke_token(n, t)
        }
        fn describe(&self) -> String {
            self.0.backend().describe()
        }
    }
    Arc::new(Shared(storage.clone()))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_one_postgres_keep_each_line_once_under_16_clients() {
    let Some(cluster) = Cluster::start("two_replicas_on_one_postgres") else {
        return;
    };
    let url = cluster.database();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let storage = Storage::postgres(&url).unwrap();
        let server = Server::start_with(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Options {
                token: None,
                limits: Limits::default(),
                ..Options::default()
            },
            storage,
        )
        .await
        .unwrap();
        replicas.push(server);
    }
    let urls: Vec<String> = replicas.iter().map(|r| r.url()).collect();
    let sid = SessionId::new_random();
    const LINES: u64 = 2_000;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..16u64 {
        let (http, url) = (http.clone(), urls[client as usize % 2].clone());
        tasks.spawn(async move {
            let mut new = 0u64;
            // Each client sends every line, in 200-line batches from its own starting point.
            for k in 0..10u64 {
                let from = ((k + client) % 10) * 200;
                let ns: Vec<u64> = (from..from + 200).collect();
                let lines: Vec<String> = ns.iter().map(|n| format!(r#"{{"n":{n}}}"#)).collect();
                let body = serde_json::json!({
                    "session_id": sid.dashless(),
                    "lines": lines,
                    "line_numbers": ns,
                    "vendor": "copilot",
                });
                let resp = http
                    .post(format!("{url}/hooks/transcript"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status().as_u16(), 200);
                let reply: serde_json::Value = resp.json().await.unwrap();
                new += reply["new"].as_u64().unwrap();
            }
            new
        });
    }
    let mut new = 0;
    while let Some(n) = tasks.join_next().await {
        new += n.unwrap();
    }
    assert_eq!(new, LINES, "each line is new in exactly one reply");
    let held = replicas[0].session(sid);
    assert_eq!(held.lines.len() as u64, LINES);
    assert_eq!(held.conflicts, 0);
    for url in &urls {
        let last: serde_json::Value = http
            .get(format!("{url}/api/sessions/{sid}/last-line"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(last["last_line_number"], LINES - 1, "replica {url}");
    }
}
