//! `kcap serve` (the client views of it, `kcap sessions` and `kcap session <id>`, are in
//! `cli::sessions`).

use crate::server::{Server, Storage};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Runs the server until SIGINT or SIGTERM: in-flight requests finish, the store is flushed.
pub async fn serve(addr: SocketAddr, data_dir: PathBuf, token: Option<String>) -> Result<(), String> {
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let storage = Storage::open(&data_dir.join("ingest")).map_err(|e| {
        format!(
            "cannot open the store in {}: {e} (is another kcap serve using it?)",
            data_dir.display()
        )
    })?;
    let server = Server::start_with(addr, token.clone(), storage)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!(
        "kcap serve: listening on {} (store {}, {})",
        server.url(),
        data_dir.display(),
        if token.is_some() {
            "bearer token required"
        } else {
            "no auth"
        }
    );
    wait_for_signal().await;
    println!("kcap serve: stopping; finishing in-flight requests and flushing the store");
    server.stop().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Per-model token totals as a table.
pub fn usage_table(u: &crate::server::usage::Usage) -> String {
    let mut out = format!(
        "{:<22} {:>8} {:>8} {:>12} {:>10} {:>12} {:>12} {:>10}\n",
        "MODEL", "REQUESTS", "PREMIUM", "INPUT", "OUTPUT", "CACHE READ", "CACHE WRITE", "REASONING"
    );
    for (model, m) in &u.models {
        out.push_str(&format!(
            "{:<22} {:>8} {:>8} {:>12} {:>10} {:>12} {:>12} {:>10}\n",
            model,
            m.requests,
            m.premium_cost,
            m.input_tokens,
            m.output_tokens,
            m.cache_read_tokens,
            m.cache_write_tokens,
            m.reasoning_tokens
        ));
    }
    out
}
