//! The web UI and its read API on the real server and both storage backends (SQLite, and
//! PostgreSQL on a throwaway cluster): lines go in through the protocol, and the pages and API
//! read them back: filters, paging, lines after N, search, usage counted once, live lines,
//! login, and hostile lines rendered inert.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::postgres::Cluster;
use kcap::ids::SessionId;
use kcap::server::storage::Storage;
use kcap::server::web::indexer;
use kcap::server::{Options, Server};

const ADMIN: &str = "admin-token-for-tests";

/// Two tests of one async check: on a temporary SQLite store, and on PostgreSQL in a throwaway
/// cluster (which says it skipped where PostgreSQL is missing, and fails in CI).
macro_rules! on_both_backends {
    ($check:ident, $on_sqlite:ident, $on_postgres:ident) => {
        #[tokio::test(flavor = "multi_thread")]
        async fn $on_sqlite() {
            $check(Storage::temporary().unwrap()).await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn $on_postgres() {
            let Some(cluster) = Cluster::start(concat!("web_storage::", stringify!($on_postgres))) else {
                return;
            };
            $check(Storage::postgres(&cluster.database()).unwrap()).await;
        }
    };
}

fn ev(kind: &str, data: serde_json::Value) -> String {
    serde_json::json!({ "type": kind, "data": data, "timestamp": "2026-09-21T10:00:00.000Z" }).to_string()
}

fn shutdown(input: u64, premium: u64) -> String {
    ev(
        "session.shutdown",
        serde_json::json!({ "shutdownType": "routine", "totalPremiumRequests": premium,
            "modelMetrics": { "gpt-5": { "requests": { "count": 2, "cost": premium },
                "usage": { "inputTokens": input, "outputTokens": 10, "cacheReadTokens": 0, "cacheWriteTokens": 0 } } } }),
    )
}

struct Ui {
    server: Server,
    http: reqwest::Client,
}

impl Ui {
    async fn start(storage: Storage) -> Ui {
        let options = Options {
            token: Some(ADMIN.into()),
            ..Options::default()
        };
        let server = Server::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), options, storage)
            .await
            .unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Ui { server, http }
    }

    async fn post(&self, sid: SessionId, repo: &str, first: u64, lines: &[String]) {
        let body = serde_json::json!({
            "session_id": sid.dashed(), "lines": lines, "vendor": "copilot", "repository": repo,
            "line_numbers": (first..first + lines.len() as u64).collect::<Vec<_>>(),
        });
        let r = self
            .http
            .post(format!("{}/hooks/transcript", self.server.url()))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.server.url()))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
    }

    async fn json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }

    fn index(&self) {
        let reads = self.server.storage().reads();
        std::thread::scope(|s| s.spawn(|| indexer::catch_up(&*reads).unwrap()).join().unwrap());
    }
}

async fn the_web_ui_reads_what_was_stored(storage: Storage) {
    let ui = Ui::start(storage).await;
    let (a, b) = (SessionId::new_random(), SessionId::new_random());
    let a_lines = vec![
        ev("session.start", serde_json::json!({ "copilotVersion": "1.0.34" })),
        ev(
            "user.message",
            serde_json::json!({ "content": "why is the parser flaky" }),
        ),
        ev(
            "assistant.message",
            serde_json::json!({ "content": "Because **timing**." }),
        ),
        "not json at all, mentions zebra".to_string(),
        ev(
            "user.message",
            serde_json::json!({ "content": "<script>alert(1)</script> <img src=x onerror=alert(2)>" }),
        ),
        shutdown(1000, 2),
    ];
    ui.post(a, "org/a", 0, &a_lines).await;
    ui.post(
        b,
        "org/b",
        0,
        &[
            ev("user.message", serde_json::json!({ "content": "unrelated" })),
            shutdown(500, 1),
        ],
    )
    .await;
    // A replay of the same lines (another path, another machine) changes nothing.
    ui.post(a, "org/a", 4, &a_lines[4..]).await;
    ui.index();

    // GET /api/sessions: the plain listing still answers; filters and paging narrow it.
    let all = ui.json("/api/sessions?limit=1").await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    let r = ui.get("/api/sessions?repository=org/a").await;
    assert_eq!(r.headers()["x-total-count"], "1");
    let only_a: serde_json::Value = r.json().await.unwrap();
    assert_eq!(only_a[0]["session_id"], a.dashed());
    assert_eq!(only_a[0]["repository"], "org/a");
    let r = ui.get("/api/sessions?offset=1&limit=1").await;
    assert_eq!(r.headers()["x-total-count"], "2");
    assert_eq!(
        r.json::<serde_json::Value>()
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(ui.get("/api/sessions?from=soon").await.status(), 400);

    // Lines after N, limit M.
    let page = ui
        .json(&format!("/api/sessions/{}/lines?after=1&limit=2", a.dashed()))
        .await;
    let ns: Vec<u64> = page["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["n"].as_u64().unwrap())
        .collect();
    assert_eq!((ns, page["more"].as_bool()), (vec![2, 3], Some(true)));
    assert_eq!(page["lines"][1]["text"], a_lines[3]);

    // Search: JSON fields and plain lines, word prefixes, a link to the line.
    let hits = ui.json("/api/search?q=flak%20PARSER").await;
    let hits = hits["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(
        (hits[0]["n"].as_u64(), hits[0]["kind"].as_str()),
        (Some(1), Some("user.message"))
    );
    assert_eq!(hits[0]["url"], format!("/sessions/{}?from=0#L1", a.dashed()));
    let hits = ui.json("/api/search?q=zebra").await;
    assert_eq!(hits["hits"][0]["n"], 3);
    let none = ui.json("/api/search?q=session").await;
    assert!(
        none["hits"].as_array().unwrap().is_empty(),
        "JSON keys and types are not indexed: {none}"
    );

    // Usage: each shutdown once, by repository, model, machine and day.
    let by_repo = ui.json("/api/usage?group=repo").await;
    assert_eq!(by_repo["total"]["input_tokens"], 1500.0);
    assert_eq!(by_repo["rows"][0]["key"], "org/a");
    assert_eq!(by_repo["rows"][0]["input_tokens"], 1000.0);
    let by_day = ui.json("/api/usage?group=day").await;
    assert_eq!(by_day["rows"][0]["key"], "2026-09-21");
    assert_eq!(by_day["rows"][0]["premium_requests"], 3.0);
    let by_machine = ui.json("/api/usage?group=machine").await;
    assert_eq!(by_machine["rows"][0]["key"], "admin");
    let by_model = ui.json("/api/usage?group=model&repository=org/b").await;
    assert_eq!(by_model["rows"][0]["input_tokens"], 500.0);

    // Pages: the list, a session with its usage table, hostile text inert, search hits.
    let list = ui.get("/").await.text().await.unwrap();
    assert!(list.contains(&a.dashed()) && list.contains("org/b"));
    let page = ui
        .get(&format!("/sessions/{}", a.dashed()))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("<table id=\"usage\"") && page.contains("gpt-5"));
    assert!(page.contains("id=\"L5\"") && !page.contains("<img") && page.contains("&lt;script&gt;"));
    let found = ui.get("/search?q=timing").await.text().await.unwrap();
    assert!(found.contains(&format!("/sessions/{}?from=0#L2", a.dashed())));

    // Without a token: pages send the browser to log in, the API says 401.
    let anon = ui
        .http
        .get(format!("{}/usage", ui.server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 303);
    assert_eq!(anon.headers()["location"], "/login?next=%2Fusage");
    let anon = ui
        .http
        .get(format!("{}/api/usage", ui.server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);

    // Live: a line posted while the stream is open arrives.
    let mut stream = ui
        .get(&format!("/api/sessions/{}/live?after=5", a.dashed()))
        .await;
    assert_eq!(stream.status(), 200);
    let late = ev("assistant.message", serde_json::json!({ "content": "late line" }));
    ui.post(a, "org/a", 6, std::slice::from_ref(&late)).await;
    let mut got = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !got.contains("late line") {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("live line in time");
        got.push_str(&String::from_utf8_lossy(&chunk.unwrap().expect("stream open")));
    }
    assert!(got.contains("id: 6"), "{got}");
    ui.server.stop().await;
}

/// A live stream opened with a named token ends soon after that token is revoked (it used to
/// stay open, streaming lines, for as long as the browser kept it).
async fn a_revoked_token_ends_an_open_live_stream(storage: Storage) {
    let ui = Ui::start(storage.clone()).await;
    let viewer = kcap::server::auth::generate();
    storage
        .run_detached(|b| b.add_token("viewer", &kcap::server::auth::hash(&viewer), 1))
        .unwrap();
    let a = SessionId::new_random();
    let first = ev("user.message", serde_json::json!({ "content": "hello" }));
    ui.post(a, "org/a", 0, std::slice::from_ref(&first)).await;
    let mut stream = ui
        .http
        .get(format!("{}/api/sessions/{}/live", ui.server.url(), a.dashed()))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut got = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !got.contains("hello") {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("first line in time");
        got.push_str(&String::from_utf8_lossy(&chunk.unwrap().expect("stream open")));
    }
    storage.run_detached(|b| b.revoke_token("viewer", 2)).unwrap();
    let revoked = tokio::time::Instant::now();
    let ended = loop {
        match tokio::time::timeout_at(revoked + Duration::from_secs(10), stream.chunk()).await {
            Err(_) => break false,
            Ok(Ok(Some(_))) => continue,
            Ok(_) => break true,
        }
    };
    assert!(ended, "the stream is still open 10 s after its token was revoked");
    let again = ui
        .http
        .get(format!("{}/api/sessions/{}/live", ui.server.url(), a.dashed()))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401, "a reconnect is refused");
    ui.server.stop().await;
}

on_both_backends!(
    a_revoked_token_ends_an_open_live_stream,
    revocation_ends_live_streams_on_sqlite,
    revocation_ends_live_streams_on_postgres
);
on_both_backends!(the_web_ui_reads_what_was_stored, sqlite, postgres);

#[test]
fn the_sqlite_search_index_resumes_where_it_stopped_after_a_restart() {
    use kcap::server::web::model::Paging;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kcap.db");
    let sid = SessionId::new_random();
    let store = |first: u64, words: &[&str]| {
        let storage = Storage::sqlite(&path).unwrap();
        store_words(&storage, sid, first, words, &[]);
        let reads = storage.reads();
        let indexed = indexer::catch_up(&*reads).unwrap();
        let hits = |q: &str| reads.search_lines(q, Paging::new(0, 10)).unwrap().len();
        (indexed, hits("alpha"), hits("omega"))
    };
    assert_eq!(store(0, &["alpha one", "alpha two"]), (2, 2, 0));
    // Reopened: only the new line is indexed, and the old ones are still found.
    assert_eq!(store(2, &["omega"]), (1, 2, 1));
}

/// The server's own indexer (no catch-up call) makes the newest lines searchable: it gives way
/// to batches being stored only for a bounded time, and once they stop it catches up.
async fn the_running_indexer_makes_the_newest_lines_searchable(storage: Storage) {
    let ui = Ui::start(storage).await;
    let sid = SessionId::new_random();
    for batch in 0..5u64 {
        let lines: Vec<String> = (0..20)
            .map(|i| {
                ev(
                    "user.message",
                    serde_json::json!({ "content": format!("filler {batch} {i}") }),
                )
            })
            .collect();
        ui.post(sid, "org/r", batch * 20, &lines).await;
    }
    ui.post(
        sid,
        "org/r",
        100,
        &[ev("user.message", serde_json::json!({ "content": "newestword" }))],
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let hits = ui.json("/api/search?q=newestword").await;
        let ns: Vec<u64> = hits["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["n"].as_u64().unwrap())
            .collect();
        if ns == vec![100] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never searchable: {hits}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ui.server.stop().await;
}

on_both_backends!(
    the_running_indexer_makes_the_newest_lines_searchable,
    the_running_indexer_makes_the_newest_lines_searchable_on_sqlite,
    the_running_indexer_makes_the_newest_lines_searchable_on_postgres
);

/// Stores a batch of `words` (one user message each) from line `first`, with `blanks`, written
/// at `now`; returns how many lines were new.
#[track_caller]
fn store_words_at(
    storage: &Storage,
    sid: SessionId,
    first: u64,
    words: &[impl AsRef<str>],
    blanks: &[u64],
    now: u64,
) -> u64 {
    use kcap::ids::event_id;
    use kcap::server::storage::{Batch, IncomingLine, Principal};
    let lines = words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let text = ev("user.message", serde_json::json!({ "content": w.as_ref() }));
            let number = first + i as u64;
            IncomingLine {
                number,
                id: event_id(&sid, number, text.as_bytes()),
                text,
            }
        })
        .collect();
    let batch = Batch {
        session: sid,
        lines,
        blanks: blanks.to_vec(),
        vendor: None,
        repository: None,
        writer: Principal::Anonymous,
        now,
    };
    // On a thread of its own: PostgreSQL's blocking client must not run on an async worker.
    storage.run_detached(|b| b.ingest(&batch)).unwrap().new
}

#[track_caller]
fn store_words(storage: &Storage, sid: SessionId, first: u64, words: &[&str], blanks: &[u64]) {
    store_words_at(storage, sid, first, words, blanks, 1);
}

/// Line numbers of the hits for `q`, after the index caught up.
#[track_caller]
fn hits_after_catch_up(storage: &Storage, q: &str) -> Vec<u64> {
    use kcap::server::web::model::Paging;
    let reads = storage.reads();
    indexer::catch_up(&*reads).unwrap();
    let mut ns: Vec<u64> = reads
        .search_lines(q, Paging::new(0, 10))
        .unwrap()
        .iter()
        .map(|h| h.n)
        .collect();
    ns.sort();
    ns
}

/// A line stored blank and filled in after the indexer passed it keeps its row: it must still
/// become searchable (the store queues it for the indexer in the filling transaction).
#[test]
fn a_blank_line_filled_in_after_indexing_becomes_searchable_on_sqlite() {
    let storage = Storage::temporary().unwrap();
    let sid = SessionId::new_random();
    store_words(&storage, sid, 0, &["first"], &[]);
    store_words(&storage, sid, 2, &["third"], &[1]);
    assert_eq!(hits_after_catch_up(&storage, "third"), vec![2]);
    store_words(&storage, sid, 1, &["filledword"], &[]);
    assert_eq!(hits_after_catch_up(&storage, "filledword"), vec![1]);
    // Indexed once: the next steps leave it alone.
    assert_eq!(hits_after_catch_up(&storage, "filledword"), vec![1]);
    assert_eq!(hits_after_catch_up(&storage, "first"), vec![0]);
}

/// The indexer asks how far behind it is to decide whether to keep giving way to ingest: every
/// backend must count the lines it has not indexed, and none once it caught up.
async fn the_index_backlog_counts_lines_not_yet_indexed(storage: Storage) {
    let sid = SessionId::new_random();
    let backlog = |storage: &Storage| {
        let reads = storage.reads();
        storage
            .run_detached(move |_| Ok(reads.index_backlog().unwrap()))
            .unwrap()
    };
    store_words(&storage, sid, 0, &["one", "two", "three"], &[]);
    assert_eq!(backlog(&storage), 3);
    let reads = storage.reads();
    storage
        .run_detached(move |_| Ok(indexer::catch_up(&*reads).unwrap()))
        .unwrap();
    assert_eq!(backlog(&storage), 0);
    store_words(&storage, sid, 3, &["four"], &[]);
    assert_eq!(backlog(&storage), 1);
}

on_both_backends!(
    the_index_backlog_counts_lines_not_yet_indexed,
    the_index_backlog_counts_on_sqlite,
    the_index_backlog_counts_on_postgres
);

/// A filled-in line's queue entry is deleted only once the index holds it durably: an index
/// file that lost its last commits (here: an older copy put back) still finds the line.
#[test]
fn a_filled_in_line_stays_searchable_when_the_index_loses_its_last_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kcap.db");
    let index = kcap::server::storage::sqlite_search::path_for(&path);
    let older = dir.path().join("older-index");
    let sid = SessionId::new_random();
    {
        let storage = Storage::sqlite(&path).unwrap();
        store_words(&storage, sid, 0, &["first"], &[]);
        store_words(&storage, sid, 2, &["third"], &[1]);
        assert_eq!(hits_after_catch_up(&storage, "third"), vec![2]);
    }
    std::fs::copy(&index, &older).unwrap();
    {
        let storage = Storage::sqlite(&path).unwrap();
        store_words(&storage, sid, 1, &["filledword"], &[]);
        assert_eq!(hits_after_catch_up(&storage, "filledword"), vec![1]);
    }
    std::fs::copy(&older, &index).unwrap();
    let storage = Storage::sqlite(&path).unwrap();
    assert_eq!(hits_after_catch_up(&storage, "filledword"), vec![1]);
    assert_eq!(hits_after_catch_up(&storage, "third"), vec![2]);
}

/// An index step holds at most 2 MB of readable text in memory (FTS5 keeps a step's tokens until
/// its commit): with lines of 1 MB (each contributes its first 256 KiB), a step stops early, and
/// the next steps take the rest.
#[test]
fn an_index_step_stops_at_its_byte_cap() {
    let storage = Storage::temporary().unwrap();
    let sid = SessionId::new_random();
    let words: Vec<String> = (0..10)
        .map(|i| format!("bigword{i} {}", "filler ".repeat(150_000)))
        .collect();
    store_words_at(&storage, sid, 0, &words, &[], 1);
    let reads = storage.reads();
    let first = reads.index_pending().unwrap();
    assert!(
        first > 0 && first < 10,
        "one step took {first} of 10 lines of 1 MB"
    );
    assert_eq!(hits_after_catch_up(&storage, "bigword9"), vec![9]);
    assert_eq!(hits_after_catch_up(&storage, "bigword0"), vec![0]);
}

/// The search index is a file beside the store: deleted, it is rebuilt; one left from another
/// store (its rowids name other lines) is not trusted but rebuilt.
#[test]
fn the_sqlite_search_index_is_rebuilt_when_missing_or_built_for_another_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kcap.db");
    let sid = SessionId::new_random();
    {
        let storage = Storage::sqlite(&path).unwrap();
        store_words(&storage, sid, 0, &["apple", "banana"], &[]);
        assert_eq!(hits_after_catch_up(&storage, "banana"), vec![1]);
    }
    let index = kcap::server::storage::sqlite_search::path_for(&path);
    assert!(index.exists(), "{}", index.display());
    std::fs::remove_file(&index).unwrap();
    let _ = std::fs::remove_file(index.with_extension("db-wal"));
    let _ = std::fs::remove_file(index.with_extension("db-shm"));
    {
        let storage = Storage::sqlite(&path).unwrap();
        assert_eq!(hits_after_catch_up(&storage, "banana"), vec![1], "rebuilt");
    }
    // Another store in the same place, with the old index beside it.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let storage = Storage::sqlite(&path).unwrap();
    store_words(&storage, sid, 0, &["cherry"], &[]);
    assert_eq!(hits_after_catch_up(&storage, "banana"), Vec::<u64>::new());
    assert_eq!(hits_after_catch_up(&storage, "cherry"), vec![0]);
}

/// Copies the store at `path` (its WAL too) to `to`, or back: a backup or a restore, with the
/// search index left where it is.
#[track_caller]
fn copy_store(from: &std::path::Path, to: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let (f, t) = (
            format!("{}{suffix}", from.display()),
            format!("{}{suffix}", to.display()),
        );
        let _ = std::fs::remove_file(&t);
        if std::path::Path::new(&f).exists() {
            std::fs::copy(&f, &t).unwrap();
        }
    }
}

/// A store restored from a backup keeps its identity, while the search index beside it went on
/// further. Trusted, that index would skip the new lines that reuse its rowids and point its
/// old entries at them: it is rebuilt, whether the restored store is still behind the index or
/// new lines already took the rowids the index passed.
#[test]
fn a_store_restored_from_a_backup_gets_its_search_index_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kcap.db");
    let backup = dir.path().join("backup.db");
    let index = kcap::server::storage::sqlite_search::path_for(&path);
    let aside = dir.path().join("index-aside");
    let sid = SessionId::new_random();
    drop(Storage::sqlite(&path).unwrap());
    {
        let storage = Storage::sqlite(&path).unwrap();
        store_words(&storage, sid, 0, &["apple"], &[]);
        assert_eq!(hits_after_catch_up(&storage, "apple"), vec![0]);
    }
    copy_store(&path, &backup);
    {
        let storage = Storage::sqlite(&path).unwrap();
        store_words(&storage, sid, 1, &["banana", "cherry"], &[]);
        assert_eq!(hits_after_catch_up(&storage, "banana"), vec![1]);
    }
    std::fs::copy(&index, &aside).unwrap();
    // Restored, still behind the index.
    copy_store(&backup, &path);
    {
        let storage = Storage::sqlite(&path).unwrap();
        assert_eq!(
            hits_after_catch_up(&storage, "banana"),
            Vec::<u64>::new(),
            "behind"
        );
        store_words(&storage, sid, 1, &["durian"], &[]);
        assert_eq!(hits_after_catch_up(&storage, "durian"), vec![1]);
    }
    // Restored, and new lines took the index's rowids before it was opened with the store.
    copy_store(&backup, &path);
    std::fs::remove_file(&index).unwrap();
    {
        let storage = Storage::sqlite(&path).unwrap();
        store_words(&storage, sid, 1, &["durian", "elder"], &[]);
    }
    std::fs::copy(&aside, &index).unwrap();
    let storage = Storage::sqlite(&path).unwrap();
    assert_eq!(
        hits_after_catch_up(&storage, "banana"),
        Vec::<u64>::new(),
        "overtaken"
    );
    assert_eq!(hits_after_catch_up(&storage, "cherry"), Vec::<u64>::new());
    assert_eq!(hits_after_catch_up(&storage, "durian"), vec![1]);
    assert_eq!(hits_after_catch_up(&storage, "elder"), vec![2]);
}

/// An unusable search index never keeps the server from starting, nor points at the store: a
/// regular file that is not a database is set aside and rebuilt; a directory or a symlink (never
/// followed, even to a file) is refused with an error naming the index as rebuildable.
#[test]
fn an_unusable_search_index_is_set_aside_or_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kcap.db");
    let index = kcap::server::storage::sqlite_search::path_for(&path);
    let sid = SessionId::new_random();
    {
        let storage = Storage::sqlite(&path).unwrap();
        store_words(&storage, sid, 0, &["apple"], &[]);
    }
    let garbage = vec![0x5a_u8; 8192];
    std::fs::write(&index, &garbage).unwrap();
    {
        let storage = Storage::sqlite(&path).unwrap();
        assert_eq!(hits_after_catch_up(&storage, "apple"), vec![0], "rebuilt");
    }
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("kcap.search.db.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "set aside: {aside:?}");
    let target = dir.path().join("elsewhere");
    std::fs::write(&target, &garbage).unwrap();
    let refused = |what: &str| {
        let err = Storage::sqlite(&path)
            .err()
            .unwrap_or_else(|| panic!("{what}: opened"))
            .to_string();
        assert!(
            err.contains("kcap.search.db") && err.contains("rebuildable"),
            "{what}: {err}"
        );
        assert!(!err.contains("kcap.db:"), "{what}: {err}");
    };
    for (what, make) in [
        (
            "a directory",
            &(|| std::fs::create_dir(&index).unwrap()) as &dyn Fn(),
        ),
        ("a symlink to a file", &|| {
            std::os::unix::fs::symlink(&target, &index).unwrap()
        }),
        ("a broken symlink", &|| {
            std::os::unix::fs::symlink(dir.path().join("none"), &index).unwrap()
        }),
    ] {
        let _ = std::fs::remove_file(&index);
        let _ = std::fs::remove_dir(&index);
        make();
        refused(what);
    }
    assert_eq!(
        std::fs::read(&target).unwrap(),
        garbage,
        "a link's target is left alone"
    );
}

/// Search pages on PostgreSQL are a total order: with many sessions starting in the same
/// millisecond (their lines tie on start and number), pages of every size, taken one after
/// another, list each matching line exactly once.
#[test]
fn postgres_search_pages_never_repeat_or_skip_lines_that_tie() {
    use kcap::server::web::model::Paging;
    let Some(cluster) = Cluster::start("web_storage::postgres_search_ties") else {
        return;
    };
    let storage = Storage::postgres(&cluster.database()).unwrap();
    let mut expected = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let sid = SessionId::new_random();
        let words: Vec<String> = (0..6u64).map(|n| format!("tie {n}")).collect();
        store_words_at(&storage, sid, 0, &words, &[], 1_000);
        expected.extend((0..6u64).map(|n| (sid, n)));
    }
    let reads = storage.reads();
    indexer::catch_up(&*reads).unwrap();
    for size in [1u32, 5, 7, 13] {
        let mut seen = Vec::new();
        let mut offset = 0;
        loop {
            let page = reads.search_lines("tie", Paging::new(offset, size)).unwrap();
            if page.is_empty() {
                break;
            }
            offset += page.len() as u64;
            seen.extend(page.into_iter().map(|h| (h.session_id, h.n)));
        }
        let unique: std::collections::BTreeSet<_> = seen.iter().copied().collect();
        assert_eq!(seen.len(), unique.len(), "pages of {size} repeated a line");
        assert_eq!(unique, expected, "pages of {size} skipped a line");
    }
}

/// A PostgreSQL database holding lines under schema 4 (search vectors computed on the fly)
/// upgrades to the stored search vector: the lines already there are found afterwards, and a
/// blank line whose text arrives later (written by any SQL) is found once the indexer has run.
#[test]
fn postgres_search_finds_lines_stored_before_the_stored_vector_migration() {
    use kcap::server::storage::migrations::POSTGRES;
    use kcap::server::web::model::Paging;
    let Some(cluster) = Cluster::start("web_storage::postgres_upgrade") else {
        return;
    };
    let url = cluster.database();
    let key = SessionId::new_random().as_bytes().to_vec();
    let old = ev("user.message", serde_json::json!({ "content": "ancient walrus" }));
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute(
        "CREATE TABLE kcap_schema (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
         applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .unwrap();
    for m in POSTGRES.iter().filter(|m| m.version <= 4) {
        c.batch_execute(m.sql).unwrap();
        c.execute(
            "INSERT INTO kcap_schema (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .unwrap();
    }
    c.execute(
        "INSERT INTO sessions (id, first_seen, last_seen, lines) VALUES ($1, 1, 1, 2)",
        &[&key],
    )
    .unwrap();
    c.execute(
        "INSERT INTO lines (session, n, blank, text) VALUES ($1, 0, false, $2), ($1, 1, true, NULL)",
        &[&key, &old.as_bytes()],
    )
    .unwrap();

    let storage = Storage::postgres(&url).unwrap();
    let reads = storage.reads();
    let hits = |q: &str| {
        // Vectors are filled by the indexer (migration 6), moments after a line is stored.
        indexer::catch_up(&*reads).unwrap();
        let found = reads.search_lines(q, Paging::new(0, 10)).unwrap();
        found.iter().map(|h| h.n).collect::<Vec<_>>()
    };
    assert_eq!(hits("ancient"), vec![0]);
    assert_eq!(hits("walrus"), vec![0]);
    // The blank line's text arrives after the upgrade: its stored vector follows the text.
    let late = ev(
        "assistant.message",
        serde_json::json!({ "content": "late walrus" }),
    );
    c.execute(
        "UPDATE lines SET blank = false, text = $2 WHERE session = $1 AND n = 1",
        &[&key, &late.as_bytes()],
    )
    .unwrap();
    assert_eq!(hits("walrus"), vec![1, 0]);
    assert_eq!(hits("late"), vec![1]);
    assert!(hits("nowhere").is_empty());
}

/// Two replicas' search indexers on one PostgreSQL database, running at once while a third
/// handle keeps storing lines: neither fails (a deadlock would be SQLSTATE 40P01), the lines
/// they fill add up to exactly the lines stored (none filled twice, none left), and search then
/// finds every line by its own word.
#[test]
fn two_postgres_indexers_at_once_fill_each_line_once_and_search_finds_every_line() {
    use kcap::server::web::model::Paging;
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(cluster) = Cluster::start("web_storage::two_postgres_indexers") else {
        return;
    };
    let url = cluster.database();
    let (writer, a, b) = (
        Storage::postgres(&url).unwrap(),
        Storage::postgres(&url).unwrap(),
        Storage::postgres(&url).unwrap(),
    );
    const SESSIONS: u64 = 12;
    const LINES: u64 = 60;
    let word = |s: u64, n: u64| format!("w{s}x{n}q");
    let sessions: Vec<SessionId> = (0..SESSIONS).map(|_| SessionId::new_random()).collect();
    let store = |s: u64, range: std::ops::Range<u64>| {
        let sid = sessions[s as usize];
        let words: Vec<String> = range.clone().map(|n| word(s, n)).collect();
        assert_eq!(
            store_words_at(&writer, sid, range.start, &words, &[], 1_000 + s),
            words.len() as u64
        );
    };
    // Half the lines are waiting before the indexers start; the rest arrive while they run.
    for s in 0..SESSIONS {
        store(s, 0..LINES / 2);
    }
    let storing = AtomicBool::new(true);
    let filled: Vec<usize> = std::thread::scope(|scope| {
        let indexers: Vec<_> = [&a, &b]
            .into_iter()
            .map(|storage| {
                let storing = &storing;
                scope.spawn(move || {
                    let reads = storage.reads();
                    let mut total = 0;
                    loop {
                        let n = reads.index_pending().expect("an index step failed");
                        total += n;
                        if n == 0 && !storing.load(Ordering::Acquire) {
                            return total;
                        }
                    }
                })
            })
            .collect();
        for s in 0..SESSIONS {
            store(s, LINES / 2..LINES);
        }
        storing.store(false, Ordering::Release);
        indexers.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let left = indexer::catch_up(&*a.reads()).unwrap();
    assert_eq!(
        filled.iter().sum::<usize>() + left,
        (SESSIONS * LINES) as usize,
        "lines filled by the two indexers {filled:?}, then {left} left over"
    );
    let reads = b.reads();
    for s in 0..SESSIONS {
        for n in 0..LINES {
            let hits = reads.search_lines(&word(s, n), Paging::new(0, 10)).unwrap();
            let found: Vec<(SessionId, u64)> = hits.iter().map(|h| (h.session_id, h.n)).collect();
            assert_eq!(
                found,
                vec![(sessions[s as usize], n)],
                "search for {}",
                word(s, n)
            );
        }
    }
}

/// Words in scripts with combining marks (Devanagari vowel signs, Arabic harakat) are split
/// by FTS5's tokenizer into several tokens, so a query for one becomes a phrase: search must
/// still find them (an index without token positions answered 500 here).
async fn search_finds_words_with_combining_marks(storage: Storage) {
    let ui = Ui::start(storage).await;
    let sid = SessionId::new_random();
    let lines = vec![
        ev(
            "user.message",
            serde_json::json!({ "content": "मेरी किताब कहाँ है" }),
        ),
        ev(
            "assistant.message",
            serde_json::json!({ "content": "هو كَتَبَ الدرس" }),
        ),
        ev("user.message", serde_json::json!({ "content": "ordinary words" })),
    ];
    ui.post(sid, "org/scripts", 0, &lines).await;
    ui.index();
    for (word, n) in [("किताब", 0), ("كَتَبَ", 1)] {
        let q: String = url_escape(word);
        let r = ui.get(&format!("/api/search?q={q}")).await;
        assert_eq!(r.status(), 200, "search for {word}: {}", r.text().await.unwrap());
        let hits: serde_json::Value = r.json().await.unwrap();
        let ns: Vec<u64> = hits["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns, vec![n], "search for {word}: {hits}");
    }
    ui.server.stop().await;
}

/// Percent-encodes every byte of a query word (the test words are all non-ASCII).
fn url_escape(word: &str) -> String {
    word.bytes().map(|b| format!("%{b:02X}")).collect()
}

on_both_backends!(
    search_finds_words_with_combining_marks,
    search_finds_combining_mark_words_on_sqlite,
    search_finds_combining_mark_words_on_postgres
);
