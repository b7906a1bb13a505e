//! The `kcap` command line.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use kcap::cli::finalize::FinalizeArgs;
use kcap::cli::options::{DeliveryOpts, HomeOpts, TimingOpts};
use kcap::cli::{demo, finalize, hook, import, logging, plugin, serve, status, watch};
use kcap::machine::table;
use kcap::store::Store;

/// kcap captures GitHub Copilot CLI sessions and delivers every transcript line, exactly once in
/// effect, to an ingest server, including the token totals Copilot writes after its sessionEnd
/// hook has returned.
#[derive(Parser)]
#[command(name = "kcap", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    #[command(flatten)]
    home: HomeOpts,
    #[command(flatten)]
    delivery: DeliveryOpts,
    #[command(flatten)]
    timing: TimingOpts,
}

#[derive(Subcommand)]
enum Cmd {
    /// Play a real Copilot session end against an embedded server and show what arrived.
    Demo {
        /// Transcript to play (its last session.shutdown line is appended after the hook returns).
        /// Default: the VibeCodingTracker sample beside the checkout, else a built-in session.
        #[arg(long)]
        transcript: Option<PathBuf>,
        /// How long after the hook returns Copilot appends session.shutdown.
        #[arg(long, default_value_t = 600)]
        shutdown_delay_ms: u64,
        /// Keep the embedded server up after the demo, so its web UI can be browsed (Ctrl-C stops).
        #[arg(long)]
        keep_serving: bool,
    },
    /// Finalize one ended Copilot session (spawned by the sessionEnd hook). Detaches into its own
    /// session unless --foreground, logs to <KCAP_HOME>/logs/<session>.log, always exits 0.
    CopilotFinalize {
        /// Copilot session id (a UUID; anything else is ignored).
        session: String,
        /// Its transcript: <COPILOT_HOME>/session-state/<session>/events.jsonl.
        path: PathBuf,
        /// Run in this process instead of detaching.
        #[arg(long)]
        foreground: bool,
        #[arg(long, hide = true)]
        spawned_at: Option<u64>,
        #[arg(long, hide = true)]
        generation: Option<u32>,
    },
    /// Carry on finalizers that crashed, were interrupted or parked (exit 1 if any stays parked).
    Finalize {
        /// Every unfinished finalizer recorded in the store.
        #[arg(long, conflicts_with = "session", required_unless_present = "session")]
        resume: bool,
        /// This session only; starts a finalizer on its Copilot transcript if none was recorded.
        #[arg(long)]
        session: Option<String>,
    },
    /// List local finalizers: phase, delivered position, last change.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// One session's finalizer: state, watermark and its whole transition log.
    Inspect {
        session: String,
        #[arg(long)]
        json: bool,
    },
    /// Copilot's hook entry point (from $COPILOT_HOME/hooks/kcap.json); reads the payload on stdin,
    /// always exits 0. sessionEnd spawns the finalizer first, then stops the watcher and drains
    /// within --drain-cap-ms, then posts session-end.
    Hook {
        /// The hook is for Copilot CLI (the only agent so far).
        #[arg(long, required = true)]
        copilot: bool,
        /// sessionStart, sessionEnd, agentStop or notification.
        #[arg(long)]
        event: String,
        #[arg(long, env = "KCAP_HOOK_DRAIN_CAP_MS", default_value_t = 8_000)]
        drain_cap_ms: u64,
    },
    /// Live watcher: delivers new complete lines of one transcript until SIGTERM, then drains once
    /// more (started by the sessionStart and agentStop hooks; one per session).
    Watch {
        session: String,
        path: PathBuf,
        /// Pause between looks at the transcript.
        #[arg(long, env = "KCAP_WATCH_POLL_MS", default_value_t = 500)]
        watch_poll_ms: u64,
    },
    /// Install or remove Copilot's hooks file ($COPILOT_HOME/hooks/kcap.json); idempotent, and no
    /// other file in that folder is touched.
    Plugin {
        #[arg(value_enum)]
        action: PluginAction,
        #[arg(long, required = true)]
        copilot: bool,
        /// Copilot's root. Default: $COPILOT_HOME or ~/.copilot.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Deliver every Copilot transcript found (or one session's), with a progress bar on a
    /// terminal; the same ids and watermarks as live capture, so nothing is stored twice.
    Import {
        #[arg(long, required = true)]
        copilot: bool,
        /// Only this session.
        #[arg(long)]
        session: Option<String>,
        /// Copilot's root. Default: $COPILOT_HOME or ~/.copilot.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// What is installed and reachable: kcap on PATH, the hooks file, the server, the store.
    Doctor,
    /// Run the ingest server until SIGINT or SIGTERM: SQLite at <KCAP_HOME>/server/kcap.db by
    /// default, PostgreSQL with --database; `kcap serve token add <name>` makes a client token.
    Serve(serve::ServeArgs),
    /// Sessions the server at KCAP_URL holds: lines, last line, lifecycle, token totals.
    Sessions {
        #[arg(long)]
        json: bool,
    },
    /// One session on the server: lines, lifecycle and token usage per model.
    Session {
        session: String,
        #[arg(long)]
        json: bool,
    },
    /// Print the finalizer's transition table (markdown) and state diagram (mermaid).
    Machine {
        #[arg(long, value_enum, default_value_t = Format::Both)]
        format: Format,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum PluginAction {
    Install,
    Remove,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Markdown,
    Mermaid,
    Both,
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let raw_args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A hook must never fail Copilot: the finalizer reports bad arguments and exits 0.
        Err(e)
            if raw_args
                .first()
                .is_some_and(|a| a == "copilot-finalize" || a == "hook")
                && e.use_stderr() =>
        {
            eprintln!("kcap: {e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kcap: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let store = Store::new(cli.home.home());
    let code = runtime.block_on(async {
        match cli.command {
            Cmd::Demo {
                transcript,
                shutdown_delay_ms,
                keep_serving,
            } => {
                logging::to_stderr();
                let args = demo::DemoArgs {
                    transcript,
                    shutdown_delay: Duration::from_millis(shutdown_delay_ms),
                    keep_serving,
                };
                match demo::run(args).await {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("kcap demo: {e}");
                        1
                    }
                }
            }
            Cmd::CopilotFinalize {
                session,
                path,
                foreground,
                spawned_at,
                generation,
            } => {
                let args = FinalizeArgs {
                    session,
                    path,
                    foreground,
                    spawned_at,
                    generation,
                };
                finalize::copilot_finalize(store, args, &cli.delivery, &cli.timing, raw_args).await;
                0
            }
            Cmd::Finalize { session, .. } => {
                logging::to_stderr();
                finalize::finalize(store, session, &cli.delivery, &cli.timing).await
            }
            Cmd::Plugin { action, dir, .. } => {
                let home = dir.unwrap_or_else(kcap::config::copilot_home);
                print(match action {
                    PluginAction::Install => plugin::install(&home),
                    PluginAction::Remove => plugin::remove(&home),
                })
            }
            Cmd::Import { session, dir, .. } => {
                logging::to_stderr();
                let only = match session.map(|s| s.parse::<kcap::ids::SessionId>()).transpose() {
                    Ok(only) => only,
                    Err(e) => {
                        eprintln!("kcap import: {e}");
                        return 2;
                    }
                };
                let home = dir.unwrap_or_else(kcap::config::copilot_home);
                let result = match cli.delivery.delivery() {
                    Ok(delivery) => import::import(&store, &delivery, &home, only).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(summary) => {
                        print!("{}", import::describe(&summary));
                        i32::from(!summary.failures.is_empty())
                    }
                    Err(e) => {
                        eprintln!("kcap import: {e}");
                        2
                    }
                }
            }
            Cmd::Doctor => {
                let (report, code) =
                    plugin::doctor(&store, &kcap::config::copilot_home(), &cli.delivery.url).await;
                print!("{report}");
                code
            }
            Cmd::Hook {
                event, drain_cap_ms, ..
            } => {
                let args = hook::HookArgs {
                    event,
                    drain_cap: Duration::from_millis(drain_cap_ms),
                };
                hook::hook(store, args, &cli.delivery, &cli.timing).await;
                0
            }
            Cmd::Watch {
                session,
                path,
                watch_poll_ms,
            } => {
                watch::watch(
                    store,
                    session,
                    path,
                    Duration::from_millis(watch_poll_ms.max(10)),
                    &cli.delivery,
                )
                .await
            }
            Cmd::Serve(args) => {
                logging::to_stderr();
                match serve::run(args, &cli.home.home()).await {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("kcap serve: {e}");
                        1
                    }
                }
            }
            Cmd::Sessions { json } => print(serve::sessions(&cli.delivery.url, json).await),
            Cmd::Session { session, json } => print(serve::session(&cli.delivery.url, &session, json).await),
            Cmd::Status { json } => print(status::status(&store, json)),
            Cmd::Inspect { session, json } => print(status::inspect(&store, &session, json)),
            Cmd::Machine { format } => {
                if matches!(format, Format::Markdown | Format::Both) {
                    println!("{}", table::markdown());
                }
                if matches!(format, Format::Mermaid | Format::Both) {
                    println!("```mermaid\n{}```", table::mermaid());
                }
                0
            }
        }
    });
    // A detached finalizer must not linger on blocking threads after its machine stopped.
    runtime.shutdown_timeout(Duration::from_secs(1));
    ExitCode::from(code as u8)
}

/// glibc gives each thread that allocates its own arena, and raises its mmap threshold after each
/// large free, so multi-megabyte batch buffers end up on fragmented heaps that never shrink. One
/// shared arena and a fixed 1 MiB mmap threshold (big buffers are mapped and unmapped whole) took
/// the finalizer's peak RSS on a 200 MB drain from 76 MB to 31 MB at unchanged CPU (kcap-bench).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn print(result: Result<String, String>) -> i32 {
    match result {
        Ok(text) => {
            println!("{}", text.trim_end());
            0
        }
        Err(e) => {
            eprintln!("kcap: {e}");
            1
        }
    }
}
