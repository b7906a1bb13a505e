//! The `kcap` command line.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use kcap::cli::finalize::FinalizeArgs;
use kcap::cli::options::{self, DeliveryOpts, HomeOpts, TimingOpts};
use kcap::cli::{
    config, demo, doctor, finalize, hook, import, logging, login, plugin, serve, sessions, status, watch,
};
use kcap::config::SETTINGS;
use kcap::machine::table;
use kcap::store::Store;

/// kcap captures coding-agent sessions and delivers every transcript line, exactly once in
/// effect and with secrets redacted, to an ingest server, including the token totals an agent
/// writes after its sessionEnd hook has returned.
///
/// Start here: `kcap demo` (the whole job on an embedded server), then `kcap plugin install`,
/// `kcap login --url <URL>` (or `kcap serve`), and `kcap doctor`.
#[derive(Parser)]
#[command(name = "kcap", version, max_term_width = 100)]
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
    /// Play a recorded agent session against an embedded server through kcap's real hooks and
    /// show what arrived: kcap's whole job on one machine, nothing to set up.
    Demo {
        /// Transcript to play (its last session.shutdown line is appended after the sessionEnd
        /// hook returns). Default: the VibeCodingTracker research sample beside the repository
        /// kcap was built from, else a built-in synthetic session.
        #[arg(long, value_name = "FILE")]
        transcript: Option<PathBuf>,
        /// How long after the sessionEnd hook returns the session.shutdown line is appended.
        #[arg(long, value_name = "MS", default_value_t = 600)]
        shutdown_delay_ms: u64,
        /// Keep the embedded server up after the demo, so its web UI can be browsed (Ctrl-C stops).
        #[arg(long)]
        keep_serving: bool,
    },
    /// Install or remove the hooks file of every agent found (an agent is found when its root
    /// exists); idempotent, no other file is touched.
    Plugin {
        /// `install` writes the hooks file, `remove` deletes it.
        #[arg(value_enum)]
        action: PluginAction,
        /// Only this agent, installed even if its root does not exist yet.
        #[arg(long, value_name = "AGENT", value_parser = agent_names())]
        agent: Option<String>,
        /// The agent's root instead of its setting's value (`kcap config show` lists each
        /// agent's root setting).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Check a server URL and token with an authenticated request, then save both to the config
    /// file (which the hooks read).
    Login {
        /// The ingest server's base URL, e.g. https://kcap.example.com.
        #[arg(long, value_name = "URL")]
        url: String,
        /// Bearer token from the server's admin (`kcap serve token add <name>`); `-` reads it
        /// from stdin, keeping it out of the shell history. Without it the server must need none.
        #[arg(long, value_name = "TOKEN")]
        token: Option<String>,
    },
    /// Show or change the config file ($KCAP_CONFIG or ~/.config/kcap/config.toml).
    Config {
        #[command(subcommand)]
        action: ConfigCmd,
    },
    /// Check the installation and say what to fix: kcap on PATH, hooks file, config, server and
    /// token, store. Exits 1 when something needs fixing.
    Doctor,
    /// Local finalizers: phase, delivered position, last change, and why and until when a parked
    /// one waits.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The live watchers (`kcap status` lists them).
    Watchers {
        #[command(subcommand)]
        action: WatchersCmd,
    },
    /// One session's finalizer: state, watermark and its whole transition log.
    Inspect {
        /// Session id (a UUID, dashed or not).
        session: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Sessions the server holds, newest first: repository or working directory, agent, machine,
    /// lines, end, tokens.
    Sessions {
        /// Show at most this many sessions.
        #[arg(long, value_name = "N", default_value_t = 20, conflicts_with = "all")]
        limit: usize,
        /// Show every session.
        #[arg(long)]
        all: bool,
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One session on the server: lines, lifecycle and token usage per model.
    Session {
        /// Session id (a UUID, dashed or not).
        session: String,
        /// Print the server's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Deliver the transcripts already on this machine (every agent found), with the same ids
    /// and watermarks as live capture, so nothing is stored twice. Retries with backoff like live
    /// delivery; progress bar on a terminal, then a summary.
    Import {
        /// Only this agent.
        #[arg(long, value_name = "AGENT", value_parser = agent_names())]
        agent: Option<String>,
        /// Only this session (a UUID).
        #[arg(long, value_name = "SESSION")]
        session: Option<String>,
        /// The agent's root instead of its setting's value (`kcap config show` lists each
        /// agent's root setting).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Only transcripts written since this time: a date (2026-11-01), an RFC 3339 time
        /// (2026-11-01T09:00:00Z) or an age (7d, 12h).
        #[arg(long, value_name = "WHEN", value_parser = import::parse_since)]
        since: Option<import::Since>,
        /// Send nothing; say what would be sent: sessions, lines, bytes, secrets redacted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run the ingest server until SIGINT or SIGTERM: SQLite at <KCAP_HOME>/server/kcap.db by
    /// default, PostgreSQL with --database; `kcap serve token add <name>` makes a client token.
    Serve(serve::ServeArgs),
    /// Carry on finalizers that crashed, were interrupted or parked (exit 1 if one stays parked).
    #[command(group = clap::ArgGroup::new("which").required(true).args(["resume", "session"]))]
    Finalize {
        /// Every unfinished finalizer recorded in the store.
        #[arg(long)]
        resume: bool,
        /// This session only; starts a finalizer on its transcript if none was recorded.
        #[arg(long, value_name = "SESSION")]
        session: Option<String>,
        /// As the hooks' background sweep: a parked finalizer is left alone until its retry time
        /// (park_retry_ms after it parked); without this flag it is retried now.
        #[arg(long)]
        sweep: bool,
    },
    /// Print a shell completion script: `kcap completions bash > ~/.local/share/bash-completion/completions/kcap`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Show what would leave the machine: reads lines (e.g. a transcript) on stdin and writes
    /// each one redacted on stdout, one line out per line in. Uses the built-in secret catalogue
    /// plus the [redact] table of the config file.
    Redact {
        /// Instead of the lines, print which rules fired on which line at which byte ranges
        /// (never the secrets).
        #[arg(long)]
        explain: bool,
        /// Take user rules from this config file instead of kcap's own.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print the finalizer's transition table (markdown) and state diagram (mermaid).
    Machine {
        /// Which to print.
        #[arg(long, value_enum, default_value_t = Format::Both)]
        format: Format,
    },
    /// An agent's hook entry point (run from the hooks file `kcap plugin install` wrote; payload
    /// on stdin; always exits 0). sessionEnd spawns the finalizer first, then stops the watcher
    /// and drains within --drain-cap-ms, then posts session-end.
    Hook {
        /// Whose hook this is (default: the first agent listed).
        #[arg(long, value_name = "AGENT", value_parser = agent_names())]
        agent: Option<String>,
        /// The hook event, as the agent names it (e.g. sessionStart, sessionEnd, agentStop,
        /// notification).
        #[arg(long, value_name = "EVENT")]
        event: String,
        /// Cap on the sessionEnd hook after the finalizer is spawned, in ms
        /// [env: KCAP_HOOK_DRAIN_CAP_MS] [config: hook_drain_cap_ms] [default: 8000].
        #[arg(long, value_name = "MS")]
        drain_cap_ms: Option<u64>,
    },
    /// Live watcher of one transcript (started by the sessionStart and agentStop hooks; one per
    /// session): delivers new complete lines until SIGTERM, then drains once more.
    Watch {
        /// Session id (a UUID).
        session: String,
        /// Its transcript, at the path its agent keeps it (checked: nothing else is read).
        path: PathBuf,
        /// Pause between looks at the transcript when polling (KCAP_FOLLOW=poll, or where file
        /// notifications cannot work), in ms; with notifications a write wakes the watcher at
        /// once and it looks by itself every 2 s or this long, whichever is longer
        /// [env: KCAP_WATCH_POLL_MS] [config: watch_poll_ms] [default: 500].
        #[arg(long, value_name = "MS")]
        watch_poll_ms: Option<u64>,
        /// End (drain, then hand the session to a finalizer) once the transcript has not grown
        /// for this long, in ms; 0 for never. The watcher also ends when the session's agent
        /// process is gone [env: KCAP_WATCH_IDLE_MS] [config: watch_idle_ms] [default: 7200000].
        #[arg(long, value_name = "MS")]
        watch_idle_ms: Option<u64>,
        /// `<pid>:<start ticks>` of the process whose exit ends the session (set by the hooks).
        #[arg(long, hide = true)]
        agent: Option<String>,
    },
    /// Finalize one ended session (spawned by the sessionEnd hook). Detaches into its own
    /// session unless --foreground, logs to <KCAP_HOME>/logs/<session>.log, always exits 0.
    Finalizer {
        /// Session id (a UUID; anything else is ignored).
        session: String,
        /// Its transcript, at the path its agent keeps it (checked: nothing else is read).
        path: PathBuf,
        /// Run in this process instead of detaching.
        #[arg(long)]
        foreground: bool,
        #[arg(long, hide = true)]
        spawned_at: Option<u64>,
        #[arg(long, hide = true)]
        generation: Option<u32>,
    },
}

#[derive(Subcommand)]
enum WatchersCmd {
    /// Tell running watchers to stop (SIGINT): each drains what is written, then exits. If the
    /// session's agent is gone (a crashed agent), the watcher hands the session to a finalizer,
    /// which delivers the rest and the session's end; if it runs, its next agentStop starts a
    /// new watcher and its sessionEnd delivers the rest and the end. A watcher that found no
    /// agent process to watch cannot tell, so it takes the stop for the session's end: a
    /// finalizer delivers the rest and an end with reason `stopped` (should the session go on,
    /// its later lines and its real end still follow). A sessionEnd hook draining is never
    /// signalled. Exits 1 if one is still draining when the wait runs out.
    Stop {
        /// Only this session's watcher (a UUID, dashed or not); all of them without it.
        #[arg(long)]
        session: Option<String>,
        /// How long to wait for each to drain and exit, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 15)]
        wait: u64,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Every setting, its value and where it came from (default, file, env or flag).
    Show {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Set one key in the config file (created with mode 0600). `kcap config show` lists the keys.
    Set {
        /// The key, e.g. url, token, poll_ms.
        key: String,
        /// Its value; `-` reads it from stdin (for the token).
        value: String,
    },
    /// Remove one key from the config file.
    Unset {
        /// The key to remove.
        key: String,
    },
    /// Print the config file's path.
    Path,
}

/// What `kcap plugin` does.
#[derive(Clone, Copy, ValueEnum)]
enum PluginAction {
    Install,
    Remove,
}

/// Shells `kcap completions` writes scripts for.
#[derive(Clone, Copy, ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
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
    // What an agent's hooks run must never fail the agent; what they start (the watcher) has no
    // one reading its stderr but its log.
    let name = subcommand_name(&raw_args);
    let hook_run = matches!(name.as_deref(), Some("finalizer" | "hook"));
    let internal = hook_run || name.as_deref() == Some("watch");
    let parsed = command().try_get_matches().and_then(|m| {
        let flagged = m.subcommand().and_then(|(_, sub)| kcap::agent::flagged(sub));
        Cli::from_arg_matches(&m).map(|cli| (cli, flagged))
    });
    let (cli, flagged) = match parsed {
        Ok(parsed) => parsed,
        // A hook must never fail the agent: the finalizer reports bad arguments and exits 0.
        Err(e) if hook_run && e.use_stderr() => {
            eprintln!("kcap: {e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => e.exit(),
    };
    // Hooks and the processes they start must run whatever the settings say (a bad value falls
    // back to its default, and `kcap doctor` reports it); a person running a command is told.
    if !internal
        && !matches!(
            cli.command,
            Cmd::Config { .. } | Cmd::Doctor | Cmd::Completions { .. }
        )
    {
        for problem in options::invalid_settings() {
            eprintln!("kcap: warning: {problem}");
        }
    }
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
    let code = runtime.block_on(run(cli, flagged, store, raw_args));
    // A detached finalizer must not linger on blocking threads after its machine stopped.
    runtime.shutdown_timeout(Duration::from_secs(1));
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// The subcommand named on a command line that may not parse: the first argument that is
/// neither an option nor the value of a top-level option. (Looking for "hook" anywhere made
/// `kcap status hook`, a typo, exit 0 like a hook.)
fn subcommand_name(args: &[OsString]) -> Option<String> {
    let with_value: Vec<String> = Cli::command()
        .get_arguments()
        .filter(|a| a.get_action().takes_values())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    let mut args = args.iter().map(|a| a.to_string_lossy());
    while let Some(arg) = args.next() {
        if with_value.iter().any(|o| *o == arg) {
            args.next();
        } else if !arg.starts_with('-') {
            // An alias (an earlier spelling) names its command.
            let command = command();
            let name = command
                .find_subcommand(arg.as_ref())
                .map(|c| c.get_name().to_string());
            return Some(name.unwrap_or_else(|| arg.into_owned()));
        }
    }
    None
}

/// The command line, with every agent's earlier spellings and the environment variables listed
/// under the top-level help.
fn command() -> clap::Command {
    kcap::agent::legacy_cli(Cli::command()).after_help(environment_help())
}

/// `--agent`'s possible values: every agent's name.
fn agent_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(kcap::agent::names())
}

/// The agent a command names: `--agent`, else an agent's own flag (`flagged`).
fn chosen_agent(
    agent: Option<String>,
    flagged: Option<&'static dyn kcap::agent::Agent>,
) -> Option<&'static dyn kcap::agent::Agent> {
    agent.as_deref().and_then(kcap::agent::by_name).or(flagged)
}

/// Every environment variable kcap reads, with its flag and config key, from the one table in
/// `config::settings`. Each description goes on its own indented line: clap wraps this text to
/// the terminal (100 columns at most) and continues a wrapped line at its own indentation, so a
/// third column would spill back to the left edge.
fn environment_help() -> String {
    use kcap::config::settings::OTHER_ENV;
    let mut out = String::from(
        "Settings: built-in default < config file (kcap config show) < environment < flag.\n\nEnvironment:\n",
    );
    for s in SETTINGS {
        let flag = match (s.flag, s.command) {
            (Some(f), Some(c)) => format!("{c} {f}"),
            (Some(f), None) => f.to_string(),
            (None, _) => "no flag".to_string(),
        };
        out.push_str(&format!("  {:<24} {flag}\n      {}\n", s.env, s.about));
    }
    for (env, flag, about) in OTHER_ENV {
        let flag = if flag.is_empty() { "-" } else { flag };
        out.push_str(&format!("  {env:<24} {flag}\n      {about}\n"));
    }
    out
}

async fn run(
    cli: Cli,
    flagged: Option<&'static dyn kcap::agent::Agent>,
    store: Store,
    raw_args: Vec<OsString>,
) -> i32 {
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
        Cmd::Finalizer {
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
            finalize::run_finalizer(store, args, &cli.delivery, &cli.timing, raw_args).await;
            0
        }
        Cmd::Finalize { session, sweep, .. } => {
            logging::to_stderr();
            finalize::finalize(store, session, sweep, &cli.delivery, &cli.timing).await
        }
        Cmd::Plugin { action, agent, dir } => {
            let chosen = chosen_agent(agent, flagged);
            let agents = match action {
                PluginAction::Install => plugin::detect_agents(chosen, dir),
                // Removing touches only kcap's own file, wherever the agent's root is.
                PluginAction::Remove => Ok(match chosen {
                    Some(a) => vec![(a, dir.unwrap_or_else(|| a.home()))],
                    None => {
                        let mut dir = dir;
                        kcap::agent::ALL
                            .iter()
                            .map(|a| (*a, dir.take().unwrap_or_else(|| a.home())))
                            .collect()
                    }
                }),
            };
            print(agents.and_then(|agents| {
                let done: Result<Vec<String>, String> = agents
                    .into_iter()
                    .map(|(agent, home)| match action {
                        PluginAction::Install => plugin::install(agent, &home),
                        PluginAction::Remove => plugin::remove(agent, &home),
                    })
                    .collect();
                done.map(|lines| lines.join("\n"))
            }))
        }
        Cmd::Login { url, token } => print(login::login(&url, token.as_deref()).await),
        Cmd::Config { action } => {
            let flags: Vec<_> = cli
                .delivery
                .flags()
                .into_iter()
                .chain(cli.timing.flags())
                .chain([(
                    "kcap_home",
                    cli.home.kcap_home.as_ref().map(|p| p.display().to_string()),
                )])
                .collect();
            print(match action {
                ConfigCmd::Show { json } => config::show(&flags, json),
                ConfigCmd::Set { key, value } => config::set(&key, &value),
                ConfigCmd::Unset { key } => config::unset(&key),
                ConfigCmd::Path => Ok(kcap::config::config_path().display().to_string()),
            })
        }
        Cmd::Import {
            agent,
            session,
            dir,
            since,
            dry_run,
        } => {
            logging::to_stderr();
            let only = match session.map(|s| s.parse::<kcap::ids::SessionId>()).transpose() {
                Ok(only) => only,
                Err(e) => {
                    eprintln!("kcap import: {e}");
                    return 2;
                }
            };
            let agents = match plugin::detect_agents(chosen_agent(agent, flagged), dir) {
                Ok(agents) => agents,
                Err(e) => {
                    eprintln!("kcap import: {e}");
                    return 2;
                }
            };
            let args = import::ImportArgs {
                only,
                since,
                dry_run,
                retry: cli.timing.timings(),
            };
            let delivery = match cli.delivery.delivery() {
                Ok(delivery) => delivery,
                Err(e) => {
                    eprintln!("kcap import: {e}");
                    return 2;
                }
            };
            let mut code = 0;
            for (agent, home) in agents {
                code = match import::import(&store, &delivery, agent, &home, &args).await {
                    Ok(summary) => emit(&import::describe(&summary))
                        .max(i32::from(!summary.failures.is_empty()))
                        .max(code),
                    Err(e) => {
                        eprintln!("kcap import: {e}");
                        2
                    }
                };
            }
            code
        }
        Cmd::Doctor => {
            let agent = kcap::agent::default();
            let (report, code) = doctor::doctor(&store, agent, &agent.home(), &cli.delivery).await;
            emit(&report).max(code)
        }
        Cmd::Hook {
            agent,
            event,
            drain_cap_ms,
        } => {
            let args = hook::HookArgs {
                agent: chosen_agent(agent, flagged).unwrap_or_else(kcap::agent::default),
                event,
                drain_cap: Duration::from_millis(options::command_setting("hook_drain_cap_ms", drain_cap_ms)),
            };
            hook::hook(store, args, &cli.delivery, &cli.timing).await;
            0
        }
        Cmd::Watch {
            session,
            path,
            watch_poll_ms,
            watch_idle_ms,
            agent,
        } => {
            let poll = options::command_setting("watch_poll_ms", watch_poll_ms).max(10);
            let args = watch::WatchArgs {
                session,
                path,
                poll: Duration::from_millis(poll),
                agent,
                idle_limit: Duration::from_millis(options::command_setting("watch_idle_ms", watch_idle_ms)),
            };
            watch::watch(store, args, &cli.delivery, &cli.timing).await
        }
        Cmd::Serve(args) => {
            logging::to_stderr();
            if !kcap::server::heap::keep_freed_memory() {
                tracing::debug!("the allocator does not take a top pad; freed memory goes back at once");
            }
            match serve::run(args, &cli.home.home()).await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("kcap serve: {e}");
                    1
                }
            }
        }
        Cmd::Sessions { limit, all, json } => {
            let limit = (!all).then_some(limit);
            print(sessions::sessions(&cli.delivery, limit, json).await)
        }
        Cmd::Session { session, json } => print(sessions::session(&cli.delivery, &session, json).await),
        Cmd::Status { json } => print(kcap::cli::watchers::status(&store, json)),
        Cmd::Watchers {
            action: WatchersCmd::Stop { session, wait },
        } => match kcap::cli::watchers::stop(&store, session.as_deref(), Duration::from_secs(wait)).await {
            Ok((report, code)) => emit(&report).max(code),
            Err(e) => {
                eprintln!("kcap watchers stop: {e}");
                2
            }
        },
        Cmd::Inspect { session, json } => print(status::inspect(&store, &session, json)),
        Cmd::Completions { shell } => {
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command(), "kcap", &mut script);
            emit(&String::from_utf8_lossy(&script))
        }
        Cmd::Redact { explain, config } => {
            let stdin = std::io::stdin().lock();
            let stdout = std::io::BufWriter::new(std::io::stdout().lock());
            match kcap::cli::redact::run(stdin, stdout, explain, config.as_deref()) {
                Ok(_) => 0,
                Err(e) => {
                    eprintln!("kcap redact: {e}");
                    2
                }
            }
        }
        Cmd::Machine { format } => {
            let mut text = String::new();
            if matches!(format, Format::Markdown | Format::Both) {
                text.push_str(&format!("{}\n", table::markdown()));
            }
            if matches!(format, Format::Mermaid | Format::Both) {
                text.push_str(&format!("```mermaid\n{}```\n", table::mermaid()));
            }
            emit(&text)
        }
    }
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

/// Writes `text` to stdout. A reader that stopped reading (`kcap sessions --all | head`) ends
/// the output quietly instead of a panic (`println!`'s answer to a closed pipe); another write
/// error is reported and exits 1.
fn emit(text: &str) -> i32 {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("kcap: cannot write the output: {e}");
            1
        }
    }
}

fn print(result: Result<String, String>) -> i32 {
    match result {
        Ok(text) => emit(&format!("{}\n", text.trim_end())),
        Err(e) => {
            eprintln!("kcap: {e}");
            1
        }
    }
}
