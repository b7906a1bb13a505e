//! The web UI on SQLite (an in-process server on a temporary store, timed over loopback HTTP,
//! so "server time" includes a loopback round trip): the session list with 10,000 sessions, the
//! first page of a 10,000-line session, search p50/p99 over `--web-mb` megabytes of generated
//! sessions (`corpus`), a line posted → received on an open live stream (SSE) p50, and both
//! pages' load in headless Chromium (`web_browser`). Search is then timed again on the same
//! corpus in a throwaway PostgreSQL cluster.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::corpus;
use kcap::ids::{event_id, SessionId};
use kcap::server::storage::{Batch, IncomingLine, Principal, Storage};
use kcap::server::web::indexer;
use kcap::server::{Options, Server};

const SESSIONS: usize = 10_000;
const BIG_SESSION_LINES: usize = 10_000;
const RUNS: usize = 21;
/// Each search query's repetitions (8 queries: 104 samples, so p99 is the second slowest).
const SEARCH_RUNS: usize = 13;
/// The generated search corpus's seed.
const SEED: u64 = 14;

fn p50(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

fn batch(session: SessionId, first: u64, lines: &[&str], owner: &str) -> Batch {
    Batch {
        session,
        lines: lines
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let number = first + i as u64;
                IncomingLine {
                    number,
                    id: event_id(&session, number, text.as_bytes()),
                    text: text.to_string(),
                }
            })
            .collect(),
        blanks: Vec::new(),
        vendor: Some(kcap::agent::default().name().into()),
        repository: Some(format!("org/repo{}", first % 7)),
        writer: Principal::Token(owner.into()),
        now: kcap::config::now_ms(),
    }
}

async fn time_get(http: &reqwest::Client, url: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let r = http.get(url).send().await.map_err(|e| e.to_string())?;
    let status = r.status();
    let body = r.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{url}: {status}: {}", String::from_utf8_lossy(&body)));
    }
    Ok(start.elapsed())
}

async fn p50_get(http: &reqwest::Client, url: &str) -> Result<Duration, String> {
    let mut times = Vec::new();
    for _ in 0..RUNS {
        times.push(time_get(http, url).await?);
    }
    Ok(p50(times))
}

/// Runs the web figures; `mb` megabytes of lines make the search corpus.
pub async fn run(sample: &Path, mb: u64) -> Result<bool, String> {
    let text = std::fs::read_to_string(sample).map_err(|e| format!("{}: {e}", sample.display()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let storage = Storage::temporary().map_err(|e| e.to_string())?;
    let server = Server::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), Options::default(), storage)
        .await
        .map_err(|e| e.to_string())?;
    let url = server.url();
    let storage = server.storage().clone();

    // 10,000 small sessions (prompt, answer, shutdown), written straight to the store.
    let small: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("\"user.message\"") || l.contains("\"session.shutdown\""))
        .take(3)
        .map(|l| l.to_string())
        .collect();
    let started = Instant::now();
    storage
        .run(move |b| {
            let small: Vec<&str> = small.iter().map(String::as_str).collect();
            for i in 0..SESSIONS {
                b.ingest(&batch(
                    SessionId::new_random(),
                    i as u64 % 7,
                    &small,
                    &format!("machine{}", i % 5),
                ))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "web: {SESSIONS} sessions stored in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // One 10,000-line session (the sample repeated) and the search corpus: `mb` MB of generated
    // sessions, each its own words (see `corpus`).
    let big = SessionId::new_random();
    let big_lines: Vec<String> = lines
        .iter()
        .cycle()
        .take(BIG_SESSION_LINES)
        .map(|l| l.to_string())
        .collect();
    let words = corpus::vocabulary();
    let corpus_lines = Arc::new(corpus::generate(SEED, mb, &words));
    let corpus_mb = corpus_lines.iter().map(|l| l.len() + 1).sum::<usize>() as f64 / 1048576.0;
    let corpus_count = corpus_lines.len();
    let (stored, indexed, index_time) = load(&storage, Some((big, big_lines)), corpus_lines.clone()).await?;
    println!(
        "web: search corpus {corpus_mb:.0} MB ({corpus_count} lines in sessions of {}, seed {SEED}) stored in \
         {:.1} s; the background indexer had {indexed} lines left, caught up {:.1} s later",
        corpus::SESSION_LINES,
        stored.as_secs_f64(),
        index_time.as_secs_f64(),
    );
    let queries = corpus::queries(&words);

    let http = reqwest::Client::new();
    let list_page = p50_get(&http, &format!("{url}/")).await?;
    let list_api = p50_get(&http, &format!("{url}/api/sessions?offset=0&limit=50")).await?;
    let list_filtered = p50_get(&http, &format!("{url}/?machine=machine3&offset=100")).await?;
    let first_page = p50_get(&http, &format!("{url}/sessions/{}", big.dashed())).await?;
    let first_api = p50_get(
        &http,
        &format!("{url}/api/sessions/{}/lines?limit=500", big.dashed()),
    )
    .await?;
    let sqlite_search = search(&http, &url, &queries).await?;
    // Printed now too: PostgreSQL's turn comes later and may take long on a big corpus.
    println!(
        "web: search on SQLite p50 {:.1} ms, p99 {:.1} ms",
        ms(sqlite_search.0),
        ms(sqlite_search.1)
    );

    // Live: post a line through the protocol while a stream is open; time until it arrives.
    let mut stream = http
        .get(format!(
            "{url}/api/sessions/{}/live?after={}",
            big.dashed(),
            BIG_SESSION_LINES - 1
        ))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let mut live = Vec::new();
    for i in 0..RUNS {
        let n = (BIG_SESSION_LINES + i) as u64;
        let line = format!(r#"{{"type":"user.message","data":{{"content":"live {n}"}}}}"#);
        let body = serde_json::json!({ "session_id": big.dashed(), "lines": [line], "line_numbers": [n] });
        let posted = Instant::now();
        http.post(format!("{url}/hooks/transcript"))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let mut got = String::new();
        let needle = format!("live {n}");
        while !got.contains(&needle) {
            let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
                .await
                .map_err(|_| "live line not received within 10 s".to_string())?
                .map_err(|e| e.to_string())?
                .ok_or("live stream closed")?;
            got.push_str(&String::from_utf8_lossy(&chunk));
        }
        live.push(posted.elapsed());
    }
    let live = p50(live);

    let pages = vec![
        ("sessions list, 10,000 sessions", format!("{url}/")),
        (
            "10,000-line session, first page",
            format!("{url}/sessions/{}", big.dashed()),
        ),
    ];
    let browser = tokio::task::spawn_blocking(move || crate::web_browser::measure(&pages))
        .await
        .map_err(|e| e.to_string())??;
    server.stop().await;
    let postgres_search = on_postgres(corpus_lines, &queries).await?;

    let rows = [
        ("sessions list page, 10,000 sessions", list_page, 100.0),
        ("GET /api/sessions (paged), 10,000 sessions", list_api, 100.0),
        ("sessions list, filtered, page 3", list_filtered, 100.0),
        ("10,000-line session, first page (500 lines)", first_page, 300.0),
        ("GET /api/sessions/{id}/lines, 500 lines", first_api, 300.0),
        ("live line posted -> received on the stream, p50", live, 500.0),
    ];
    println!("\n| web UI (SQLite, corpus {corpus_mb:.0} MB) | p50 ms | target ms | |");
    println!("|---|---|---|---|");
    let mut ok = true;
    for (what, took, target) in rows {
        let met = ms(took) <= target;
        ok &= met;
        println!("| {what} | {:.1} | {target:.0} | {} |", ms(took), verdict(met));
    }
    println!(
        "\n| search over {corpus_mb:.0} MB of generated sessions ({} queries x {SEARCH_RUNS}: {}) | p50 ms | p99 ms | target | |",
        queries.len(),
        queries.join(", ")
    );
    println!("|---|---|---|---|---|");
    let met = ms(sqlite_search.0) <= 200.0;
    ok &= met;
    println!(
        "| SQLite FTS5 | {:.1} | {:.1} | p50 ≤ 200 ms | {} |",
        ms(sqlite_search.0),
        ms(sqlite_search.1),
        verdict(met)
    );
    match postgres_search {
        Some((p50, p99)) => println!(
            "| PostgreSQL full text | {:.1} | {:.1} | (issue sets none; SQLite's for reference) | {} |",
            ms(p50),
            ms(p99),
            if ms(p50) <= 200.0 { "within" } else { "over" }
        ),
        None => println!("| PostgreSQL full text | - | - | skipped: no PostgreSQL binaries | |"),
    }
    if let Some(pages) = browser {
        println!("\n| in headless Chromium, ms from navigation start (p50 of 7 loads) | DOM interactive | load event end | last item painted | target ms | |");
        println!("|---|---|---|---|---|---|");
        for (what, t) in pages {
            let met = t.interactive.max(t.loaded).max(t.painted) <= 1000.0;
            ok &= met;
            println!(
                "| {what} (last item: {}) | {:.0} | {:.0} | {:.0} | 1000 | {} |",
                t.last,
                t.interactive,
                t.loaded,
                t.painted,
                verdict(met)
            );
        }
    }
    Ok(ok)
}

/// Stores the big session (if any) and the corpus, then runs the indexer until it has caught up;
/// returns the store time, the lines the indexer had left, and its catch-up time.
async fn load(
    storage: &Storage,
    big: Option<(SessionId, Vec<String>)>,
    corpus_lines: Arc<Vec<String>>,
) -> Result<(Duration, usize, Duration), String> {
    let started = Instant::now();
    storage
        .run(move |b| {
            if let Some((big, lines)) = &big {
                for (chunk_no, chunk) in lines.chunks(1000).enumerate() {
                    let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                    b.ingest(&batch(*big, (chunk_no * 1000) as u64, &refs, "big"))?;
                }
            }
            for (session_no, session) in corpus_lines.chunks(corpus::SESSION_LINES).enumerate() {
                let id = SessionId::from_bytes(
                    *uuid::Uuid::from_u128(SEED as u128 * 1_000_000 + session_no as u128).as_bytes(),
                );
                for (chunk_no, chunk) in session.chunks(1000).enumerate() {
                    let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                    b.ingest(&batch(
                        id,
                        (chunk_no * 1000) as u64,
                        &refs,
                        &format!("machine{}", session_no % 5),
                    ))?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?;
    let stored = started.elapsed();
    let reads = storage.reads();
    let started = Instant::now();
    let indexed = tokio::task::spawn_blocking(move || indexer::catch_up(&*reads))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok((stored, indexed, started.elapsed()))
}

/// Search p50 and p99 over `queries`, each asked [`SEARCH_RUNS`] times.
async fn search(
    http: &reqwest::Client,
    url: &str,
    queries: &[String],
) -> Result<(Duration, Duration), String> {
    let mut times = Vec::new();
    for q in queries {
        for _ in 0..SEARCH_RUNS {
            times.push(time_get(http, &format!("{url}/api/search?q={}", q.replace(' ', "+"))).await?);
        }
    }
    times.sort();
    let p99 = times[(times.len() * 99).div_ceil(100) - 1];
    Ok((p50(times), p99))
}

/// The same corpus and queries on a throwaway PostgreSQL cluster; `None` without its binaries.
async fn on_postgres(
    corpus_lines: Arc<Vec<String>>,
    queries: &[String],
) -> Result<Option<(Duration, Duration)>, String> {
    let Some(cluster) = crate::ingest::pg_cluster::Cluster::start("kcap-bench search on PostgreSQL") else {
        return Ok(None);
    };
    let database = cluster.database();
    let storage = tokio::task::spawn_blocking(move || Storage::postgres(&database))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let server = Server::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), Options::default(), storage)
        .await
        .map_err(|e| e.to_string())?;
    let mb = corpus_lines.iter().map(|l| l.len() + 1).sum::<usize>() as f64 / 1048576.0;
    let (stored, indexed, index_time) = load(server.storage(), None, corpus_lines).await?;
    println!(
        "web: the same {mb:.0} MB stored in PostgreSQL in {:.1} s; indexer: {indexed} lines left, {:.1} s",
        stored.as_secs_f64(),
        index_time.as_secs_f64()
    );
    let times = search(&reqwest::Client::new(), &server.url(), queries).await;
    server.stop().await;
    drop(cluster);
    times.map(Some)
}
