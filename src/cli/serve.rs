//! `kcap serve` (the client views of it, `kcap sessions` and `kcap session <id>`, are in
//! `cli::sessions`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::server::storage::StorageError;
use crate::server::{auth, Limits, Options, Server, Storage};

fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v > 0.0 && v.is_finite()) {
        return Err("must be a positive number of seconds".into());
    }
    Ok(Duration::from_secs_f64(v))
}

/// `kcap serve`'s flags.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(subcommand)]
    pub action: Option<ServeAction>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5108", value_parser = crate::cli::options::socket_addr)]
    pub addr: SocketAddr,
    /// PostgreSQL URL (postgres://user:password@host:port/db): the server keeps nothing
    /// locally, so any number of replicas can share the database. Default: SQLite in --data-dir.
    #[arg(long, env = "KCAP_DATABASE_URL", hide_env_values = true, global = true)]
    pub database: Option<String>,
    /// Seconds to wait at start for the database: PostgreSQL not accepting connections yet
    /// (refused, or starting up), or SQLite locked by another process. Other errors fail at once.
    #[arg(long, env = "KCAP_DATABASE_WAIT", default_value = "30", value_parser = seconds, value_name = "SECONDS", global = true)]
    pub database_wait: Duration,
    /// PostgreSQL is reached through a transaction-pooling proxy (PgBouncer
    /// pool_mode=transaction): keep no prepared statement past its transaction and run every
    /// read in a transaction, so each statement meets the server connection that prepared it.
    /// Not needed for session pooling or PgBouncer 1.21+ with max_prepared_statements set.
    #[arg(long, env = "KCAP_PG_TRANSACTION_POOLING", global = true,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub pg_transaction_pooling: bool,
    /// Directory of the embedded SQLite database (kcap.db). Default: <KCAP_HOME>/server.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Admin token: every route but /auth/config then requires `Authorization: Bearer <token>`.
    /// It may write to any session. Named tokens (`kcap serve token add`) also turn auth on.
    #[arg(long, env = "KCAP_SERVER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A host name clients use to reach this server (repeat for several). Bound to loopback,
    /// the server answers only loopback names, IP literals and these (a web page cannot rebind
    /// its own DNS name to your server); bound elsewhere, giving any makes it answer only those
    /// and IP literals, and a server with no token answers only IP literals and loopback names
    /// unless you give some.
    #[arg(long = "allowed-host", value_name = "HOST")]
    pub allowed_hosts: Vec<String>,
    /// Import a sled store written by an older `kcap serve` (its `ingest` directory), once,
    /// before serving. Lines already present are kept once.
    #[arg(long, value_name = "DIR")]
    pub import_sled: Option<PathBuf>,
    /// Seconds a client has to send a complete request head, counted from when the connection
    /// opened or the head's first byte arrived (half-open and slow-header clients are cut off).
    #[arg(long, default_value = "10", value_parser = seconds, value_name = "SECONDS")]
    pub header_timeout: Duration,
    /// Seconds a request body may take to arrive in full, plus one second per MiB received:
    /// a large body over a slow link keeps going while it averages 1 MiB/s (408 after).
    #[arg(long, default_value = "120", value_parser = seconds, value_name = "SECONDS")]
    pub body_timeout: Duration,
    /// Seconds a keep-alive connection may sit without a request before it is closed.
    #[arg(long, default_value = "30", value_parser = seconds, value_name = "SECONDS")]
    pub idle_timeout: Duration,
    /// Open connections at most (lowered to fit the open-files limit, which is raised to its
    /// maximum); more wait in the kernel's queue until one closes.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Batches of up to 16 MiB read and stored at once at most, so memory follows batch size ×
    /// this, not store size. A batch waiting longer than 30 s for a slot gets a 503 (retry).
    #[arg(long, default_value_t = 8)]
    pub max_ingest: usize,
    /// Bytes that transcript bodies may hold at once, all together. Each reserves its declared
    /// length once its first bytes arrive (a chunked one takes its share as it arrives, one at a
    /// time), so bodies over the budget together are read one after the other; a wait past 30 s
    /// is a 503. Bodies over 16 MiB are parsed as they arrive. Never below --max-body.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub large_body_budget: u64,
    /// Largest transcript batch body in bytes (413 above; kcap clients then split the batch).
    /// Large enough by default for a client that sends a whole 195 MB session in one request.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub max_body: u64,
}

/// `kcap serve` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum ServeAction {
    /// Manage client tokens (stored hashed in the server's database).
    #[command(subcommand)]
    Token(TokenAction),
}

/// `kcap serve token …`.
#[derive(Subcommand, Debug, Clone)]
pub enum TokenAction {
    /// Create a token for a user or machine and print it (once: only its hash is stored).
    /// Sessions first written with it belong to <NAME>; other tokens get 403 writing to them.
    Add {
        /// Who or what the token is for (e.g. alice-laptop): shown as the owner of its sessions.
        name: String,
    },
    /// List the tokens: name, when created, when revoked (never a secret: only hashes are
    /// stored).
    List,
    /// Revoke a token: from the next request on, it gets 401 (every request looks the token up
    /// in the database, so running servers and replicas need no restart). Its sessions keep
    /// their owner; the name stays taken.
    Revoke {
        /// The token's name, as `kcap serve token list` shows it.
        name: String,
    },
}

impl ServeArgs {
    fn limits(&self) -> Limits {
        Limits {
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections.max(1),
            max_ingest: self.max_ingest.max(1),
            large_body_budget: self.large_body_budget,
            max_body: self.max_body,
            ..Limits::default()
        }
    }
}

/// Opens the configured database (PostgreSQL URL, else SQLite under the data directory).
fn open(args: &ServeArgs, home: &Path) -> Result<Storage, String> {
    if let Some(url) = args.database.as_deref().filter(|u| !u.is_empty()) {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(format!(
                "--database must be a postgres:// URL (got {:?}); without it kcap serve uses SQLite",
                url.split(':').next().unwrap_or_default()
            ));
        }
        let options = crate::server::storage::PostgresOptions {
            start_wait: args.database_wait,
            transaction_pooling: args.pg_transaction_pooling,
        };
        return Storage::postgres_with(url, options)
            .map_err(|e| format!("cannot use the PostgreSQL database: {e}"));
    }
    let dir = args.data_dir.clone().unwrap_or_else(|| home.join("server"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("kcap.db");
    let sled_era = dir.join("ingest");
    if sled_era.is_dir() && !path.exists() && args.import_sled.is_none() {
        eprintln!(
            "kcap serve: {} holds a store from an older kcap serve (sled); import it once with \
             `kcap serve --import-sled {}`",
            dir.display(),
            sled_era.display()
        );
    }
    Storage::sqlite_waiting(&path, args.database_wait)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

/// `kcap serve [token add NAME]`.
pub async fn run(args: ServeArgs, home: &Path) -> Result<(), String> {
    let storage = open(&args, home)?;
    match &args.action {
        Some(ServeAction::Token(TokenAction::Add { name })) => {
            auth::valid_name(name)?;
            let token = auth::generate();
            let digest = auth::hash(&token);
            let name = name.clone();
            storage
                .run(move |b| b.add_token(&name, &digest, crate::config::now_ms()))
                .await
                .map_err(|e| match e {
                    StorageError::Exists(m) => m,
                    other => other.to_string(),
                })?;
            println!("{token}");
            eprintln!(
                "kcap serve: token stored (hashed) in {}; give it to the client as KCAP_TOKEN. It is not shown again.",
                storage.backend().describe()
            );
            Ok(())
        }
        Some(ServeAction::Token(TokenAction::List)) => {
            let tokens = storage.run(|b| b.tokens()).await.map_err(|e| e.to_string())?;
            print!("{}", token_table(&tokens));
            if tokens.is_empty() {
                eprintln!("kcap serve: no tokens in {}", storage.backend().describe());
            }
            Ok(())
        }
        Some(ServeAction::Token(TokenAction::Revoke { name })) => {
            let who = name.clone();
            let newly = storage
                .run(move |b| b.revoke_token(&who, crate::config::now_ms()))
                .await
                .map_err(|e| e.to_string())?;
            if newly {
                println!("kcap serve: token {name:?} revoked; it gets 401 from now on");
            } else {
                println!("kcap serve: token {name:?} was already revoked");
            }
            Ok(())
        }
        None => {
            if let Some(dir) = &args.import_sled {
                let dir = dir.clone();
                let report = storage
                    .run(move |b| crate::server::storage::sled_import::import(&dir, b))
                    .await
                    .map_err(|e| format!("import failed: {e}"))?;
                println!("kcap serve: {report}");
            }
            let options = Options {
                token: args.token.clone().filter(|t| !t.is_empty()),
                limits: args.limits(),
                allowed_hosts: args.allowed_hosts.clone(),
            };
            serve(args.addr, storage, options).await
        }
    }
}

/// `kcap serve token list` as a table (UTC times).
fn token_table(tokens: &[crate::server::storage::TokenInfo]) -> String {
    use crate::server::web::format::datetime;
    let mut out = format!("{:<24} {:<20} {:<20}\n", "NAME", "CREATED", "REVOKED");
    for t in tokens {
        let revoked = t.revoked_at.map_or_else(|| "-".to_string(), datetime);
        out.push_str(&format!(
            "{:<24} {:<20} {:<20}\n",
            t.name,
            datetime(t.created_at),
            revoked
        ));
    }
    out
}

/// Runs the server until SIGINT or SIGTERM: in-flight requests finish (up to a few seconds).
pub async fn serve(addr: SocketAddr, storage: Storage, options: Options) -> Result<(), String> {
    let described = storage.backend().describe();
    let auth = if options.token.is_some() {
        "admin bearer token required"
    } else {
        "named tokens if any exist, else no auth"
    };
    let server = Server::start_with(addr, options, storage)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!("kcap serve: listening on {} ({described}; {auth})", server.url());
    wait_for_signal().await;
    println!("kcap serve: stopping; finishing in-flight requests");
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
