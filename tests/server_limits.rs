//! `kcap serve` under hostile or heavy load: half-open and slow-header connections, held
//! bodies, oversized hooks, a large one-request tail, 64 writers then SIGTERM.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use kcap::ids::{event_id, SessionId};
use kcap::server::{Limits, Server};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn http(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}

fn batch(sid: SessionId, from: u64, count: u64, pad: usize) -> Value {
    let ns: Vec<u64> = (from..from + count).collect();
    let lines: Vec<String> = ns
        .iter()
        .map(|n| format!(r#"{{"type":"x","n":{n},"pad":"{}"}}"#, "p".repeat(pad)))
        .collect();
    let ids: Vec<_> = ns
        .iter()
        .zip(&lines)
        .map(|(n, l)| event_id(&sid, *n, l.as_bytes()))
        .collect();
    json!({"session_id": sid.dashless(), "lines": lines, "line_numbers": ns, "event_ids": ids, "vendor": "copilot"})
}

async fn store_one(url: &str) -> u16 {
    let sid = SessionId::new_random();
    http(Duration::from_secs(20))
        .post(format!("{url}/hooks/transcript"))
        .json(&batch(sid, 0, 10, 10))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// True when the server closed `stream` (EOF or reset) within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn half_open_and_slow_header_connections_do_not_lock_others_out() {
    kcap::server::listener::fit_connection_cap(8192);
    // Default limits: 1,100 connections that never send a byte.
    let server = server().await;
    let mut idle = Vec::new();
    for _ in 0..1_100 {
        idle.push(TcpStream::connect(server.addr()).await.unwrap());
    }
    let started = Instant::now();
    assert_eq!(store_one(&server.url()).await, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(idle);

    // A small cap, filled with half-open and slowloris connections: the timeouts free it.
    let limits = Limits {
        header_timeout: Duration::from_millis(800),
        idle_timeout: Duration::from_millis(800),
        max_connections: 32,
        ..Limits::default()
    };
    let server = Server::start_with_limits(SocketAddr::from(([127, 0, 0, 1], 0)), None, limits)
        .await
        .unwrap();
    let mut hostile = Vec::new();
    for i in 0..64 {
        let mut s = TcpStream::connect(server.addr()).await.unwrap();
        if i % 2 == 0 {
            // Slowloris: a head that is never finished.
            s.write_all(b"POST /hooks/transcript HTTP/1.1\r\nHost: localhost\r\n")
                .await
                .unwrap();
        }
        hostile.push(s);
    }
    let started = Instant::now();
    assert_eq!(store_one(&server.url()).await, 200);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    for s in hostile.iter_mut().take(4) {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "the server must close a connection that sends no complete head"
        );
    }
    // A keep-alive connection idle past the idle timeout is closed too.
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    s.write_all(b"GET /auth/config HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transcript_request_counts_as_ingest_while_its_body_arrives() {
    let server = Server::start(SocketAddr::from(([127, 0, 0, 1], 0)), None)
        .await
        .unwrap();
    assert!(!server.ingesting());
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    s.write_all(
        b"POST /hooks/transcript HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.ingesting() {
        assert!(
            Instant::now() < deadline,
            "a body being received never counted as ingest"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.ingesting() {
        assert!(
            Instant::now() < deadline,
            "still counted after the client went away"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_held_body_times_out_and_others_are_served_meanwhile() {
    let limits = Limits {
        body_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let server = Server::start_with_limits(SocketAddr::from(([127, 0, 0, 1], 0)), None, limits)
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..16 {
        // Declares 20 MB (the streaming path takes every ingest slot), sends 1 MB, holds.
        let mut s = TcpStream::connect(server.addr()).await.unwrap();
        s.write_all(
            b"POST /hooks/transcript HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 20000000\r\n\r\n",
        )
        .await
        .unwrap();
        s.write_all(&vec![b' '; 1_000_000]).await.unwrap();
        held.push(s);
    }
    let started = Instant::now();
    assert_eq!(store_one(&server.url()).await, 200);
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut s = held.pop().unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.starts_with("HTTP/1.1 408") || reply.is_empty(),
        "a held body gets 408 (or is dropped): {reply}"
    );
}

/// Two large bodies that together exceed the body budget are both stored, one after the other.
/// Before, each took its share chunk by chunk, both ended up holding part of the budget and
/// waiting for the other, and both got 408 at the body timeout (nothing stored).
#[tokio::test(flavor = "multi_thread")]
async fn two_large_bodies_over_the_budget_together_are_both_stored() {
    let limits = Limits {
        large_body_budget: 24 * 1024 * 1024,
        max_body: 24 * 1024 * 1024,
        body_timeout: Duration::from_secs(15),
        ..Limits::default()
    };
    let server = Server::start_with_limits(SocketAddr::from(([127, 0, 0, 1], 0)), None, limits)
        .await
        .unwrap();
    // ~18 MB each: over the 16 MiB streaming threshold, 36 MB together.
    let bodies: Vec<Vec<u8>> = (0..2)
        .map(|_| serde_json::to_vec(&batch(SessionId::new_random(), 0, 9_000, 2_000)).unwrap())
        .collect();
    assert!(bodies
        .iter()
        .all(|b| b.len() > 17_000_000 && b.len() < 24_000_000));
    let url = server.url();
    let started = Instant::now();
    let posts = bodies.into_iter().map(|body| {
        let url = url.clone();
        tokio::spawn(async move {
            http(Duration::from_secs(60))
                .post(format!("{url}/hooks/transcript"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
    });
    let statuses: Vec<u16> = futures_util::future::join_all(posts)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(statuses, [200, 200], "both stored");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

/// A body that keeps arriving is not cut at the body timeout: past it, each MiB received gives
/// it another second (a 195 MB tail over a slow link was cut at 120 s, and retried for ever).
#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_keeps_arriving_outlives_the_body_timeout() {
    let limits = Limits {
        body_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let server = Server::start_with_limits(SocketAddr::from(([127, 0, 0, 1], 0)), None, limits)
        .await
        .unwrap();
    let body = serde_json::to_vec(&batch(SessionId::new_random(), 0, 2_000, 2_000)).unwrap();
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    s.write_all(
        format!(
            "POST /hooks/transcript HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // 4 MB in 1 MB pieces, 0.9 s apart: 2.7 s in all, past the 2 s timeout.
    for piece in body.chunks(body.len().div_ceil(4)) {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    let mut reply = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

/// Clients that send a transcript request's headers and then nothing hold no thread: each
/// streamed body's parser used to start on a blocking thread at once, and ~512 such
/// connections (here 24, on a runtime of 8 blocking threads) left none for storing anything.
#[test]
fn clients_that_send_only_headers_hold_no_parser_thread() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let limits = Limits {
            body_timeout: Duration::from_secs(60),
            ..Limits::default()
        };
        let server = Server::start_with_limits(SocketAddr::from(([127, 0, 0, 1], 0)), None, limits)
            .await
            .unwrap();
        let mut held = Vec::new();
        for _ in 0..24 {
            let mut s = TcpStream::connect(server.addr()).await.unwrap();
            s.write_all(
                b"POST /hooks/transcript HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            )
            .await
            .unwrap();
            held.push(s);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        assert_eq!(store_one(&server.url()).await, 200, "a ready batch was stored");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        drop(held);
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn small_bodies_held_short_take_no_ingest_slot() {
    // Twice as many slow senders as ingest slots, each declaring a small body and sending part
    // of it: they hold only the bytes they sent, so a ready batch is stored at once (before the
    // fix each held a slot until the body timeout and the ready batch waited, then got 503).
    let limits = Limits {
        max_ingest: 2,
        body_timeout: Duration::from_secs(30),
        ingest_queue_timeout: Duration::from_secs(3),
        ..Limits::default()
    };
    let server = Server::start_with_limits(SocketAddr::from(([127, 0, 0, 1], 0)), None, limits)
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(server.addr()).await.unwrap();
        s.write_all(
            b"POST /hooks/transcript HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"session_id\":",
        )
        .await
        .unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store_one(&server.url()).await, 200, "a ready batch got no slot");
    drop(held);
}

/// An over-limit hook body is refused with a JSON error, like every other error (axum's own
/// answer was plain text).
#[tokio::test]
async fn an_oversized_hook_body_gets_a_json_413() {
    let server = Server::start(SocketAddr::from(([127, 0, 0, 1], 0)), None)
        .await
        .unwrap();
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    s.write_all(
        b"POST /hooks/notification HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1100000\r\n\r\n",
    )
    .await
    .unwrap();
    // Over the 1 MiB hook limit: read up to the limit, then refused.
    s.write_all(&vec![b' '; 1_100_000]).await.unwrap();
    let mut reply = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(
        reply.contains("application/json") && reply.contains(r#"{"error":"#),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_hooks_are_refused_and_a_large_tail_is_stored_whole() {
    // `kcap serve`'s own defaults (Server::start keeps the sled-era 32 MiB body limit).
    let server = Server::start_with_limits(SocketAddr::from(([127, 0, 0, 1], 0)), None, Limits::default())
        .await
        .unwrap();
    let url = server.url();
    let sid = SessionId::new_random();
    let note = json!({"session_id": sid.dashless(), "message": "n".repeat(30 * 1024 * 1024)});
    let status = http(Duration::from_secs(30))
        .post(format!("{url}/hooks/notification"))
        .json(&note)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert!(
        status == 413 || status == 0,
        "a 30 MB notification is refused ({status})"
    );
    assert_eq!(store_one(&url).await, 200, "the server keeps serving");

    // 40 MB in one request (over the streaming threshold): stored whole, in one reply.
    let body = serde_json::to_vec(&batch(sid, 0, 20_000, 2_000)).unwrap();
    assert!(body.len() > 32 * 1024 * 1024);
    let resp = http(Duration::from_secs(120))
        .post(format!("{url}/hooks/transcript"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["new"], 20_000);
    assert_eq!(server.session(sid).lines.len(), 20_000);
    // Malformed large bodies are refused whole.
    let mut bad = serde_json::to_vec(&batch(sid, 20_000, 10_000, 2_000)).unwrap();
    bad.truncate(bad.len() - 100);
    let resp = http(Duration::from_secs(60))
        .post(format!("{url}/hooks/transcript"))
        .body(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(server.session(sid).lines.len(), 20_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn sixty_four_writers_are_all_answered_then_sigterm_exits_within_5_s() {
    let secs: u64 = std::env::var("KCAP_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let env = Env::new();
    let addr = free_port();
    let url = format!("http://{addr}");
    let spawn = || {
        env.kcap("http://unused")
            .args(["serve", "--addr", &addr.to_string(), "--data-dir"])
            .arg(env.dir.path().join("server"))
            .env_remove("KCAP_DATABASE_URL")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut server = spawn();
    wait_up(&url).await;
    let stop_at = Instant::now() + Duration::from_secs(secs);
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let url = url.clone();
        writers.spawn(async move {
            let (sid, client) = (SessionId::new_random(), http(Duration::from_secs(60)));
            let (mut acked, mut other, mut refused) = (0u64, 0u64, 0u64);
            while Instant::now() < stop_at + Duration::from_secs(2) {
                let resp = client
                    .post(format!("{url}/hooks/transcript"))
                    .json(&batch(sid, acked, 100, 200))
                    .send()
                    .await;
                match resp.map(|r| r.status().as_u16()) {
                    Ok(200) => acked += 100,
                    Ok(503) => other += 1,
                    Ok(_) => other += 1,
                    // Connection refused or reset: the server is stopping.
                    Err(_) => refused += 1,
                }
                if refused > 0 {
                    break;
                }
            }
            (sid, acked, other)
        });
    }
    tokio::time::sleep_until(stop_at.into()).await;
    // SIGTERM while all 64 are still writing.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(server.id().unwrap() as i32, libc::SIGTERM) };
    let signalled = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(10), server.wait())
        .await
        .expect("kcap serve did not exit within 10 s of SIGTERM")
        .unwrap();
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    let mut results = Vec::new();
    while let Some(r) = writers.join_next().await {
        results.push(r.unwrap());
    }
    let total: u64 = results.iter().map(|r| r.1).sum();
    let unexpected: u64 = results.iter().map(|r| r.2).sum();
    assert!(total > 0, "nothing was acknowledged");
    assert_eq!(unexpected, 0, "every request before SIGTERM got a 200");
    // Every acknowledged line survived.
    let _server = spawn();
    wait_up(&url).await;
    let client = http(Duration::from_secs(20));
    for (sid, acked, _) in results {
        let last: Value = client
            .get(format!("{url}/api/sessions/{sid}/last-line"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(last["last_line_number"].as_i64().unwrap() + 1 >= acked as i64);
    }
    println!("64 writers, {secs} s: {total} lines acknowledged, SIGTERM exit in {took:?}");
}

async fn wait_up(url: &str) {
    for _ in 0..250 {
        if reqwest::get(format!("{url}/auth/config")).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("kcap serve did not come up at {url}");
}
