//! Every setting kcap reads, in one table: its config-file key, its environment variable, its
//! flag, its default and what it means. `--help`, `kcap config show`, `kcap config set`, `kcap
//! doctor` and the README's table are all checked against this list.
//!
//! Precedence, lowest first: built-in default < config file < environment variable < flag. The
//! environment wins over the file so that tests and scripts can steer any process; the file is
//! what an agent's hook processes (which usually have neither flags nor kcap's variables) read.

use std::fmt;

use super::file::ConfigFile;

/// What kind of value a setting holds; decides how `config set` parses and stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An `http://` or `https://` base URL.
    Url,
    /// A secret: never printed, and never accepted as a flag (command lines are visible in `ps`).
    Secret,
    /// A filesystem path.
    Path,
    /// A non-negative integer (milliseconds, counts, bytes).
    Number,
}

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Key in the config file (top level).
    pub key: &'static str,
    /// Environment variable.
    pub env: &'static str,
    /// Long flag, where there is one (`None` for secrets).
    pub flag: Option<&'static str>,
    /// The subcommand whose flag it is, or `None` for a top-level (global) option.
    pub command: Option<&'static str>,
    /// The built-in default, as text (`None` when unset by default).
    pub default: Option<&'static str>,
    /// What it means, for `config show` and the README.
    pub about: &'static str,
    /// How the value is parsed.
    pub kind: Kind,
}

/// Every setting. The defaults of the timing knobs are `machine::Timings::default()`'s; a unit
/// test keeps them equal.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "url",
        env: "KCAP_URL",
        flag: Some("--url"),
        command: None,
        default: Some(crate::protocol::DEFAULT_URL),
        about: "ingest server base URL",
        kind: Kind::Url,
    },
    Setting {
        key: "token",
        env: "KCAP_TOKEN",
        flag: None,
        command: None,
        default: None,
        about: "bearer token for the ingest server (set it with `kcap login`)",
        kind: Kind::Secret,
    },
    Setting {
        key: "kcap_home",
        env: "KCAP_HOME",
        flag: Some("--kcap-home"),
        command: None,
        default: Some("$XDG_DATA_HOME/kcap or ~/.local/share/kcap"),
        about: "kcap's own files: store, logs, watcher pid files",
        kind: Kind::Path,
    },
    // The default agent's root; every agent's is in `agent::HOME_SETTINGS` (a test checks).
    crate::agent::HOME_SETTINGS[0],
    Setting {
        key: "http_timeout_ms",
        env: "KCAP_HTTP_TIMEOUT_MS",
        flag: Some("--http-timeout-ms"),
        command: None,
        default: Some("30000"),
        about: "per-request HTTP timeout",
        kind: Kind::Number,
    },
    Setting {
        key: "batch_lines",
        env: "KCAP_BATCH_LINES",
        flag: Some("--batch-lines"),
        command: None,
        default: Some("1000"),
        about: "most lines in one delivery batch",
        kind: Kind::Number,
    },
    Setting {
        key: "batch_bytes",
        env: "KCAP_BATCH_BYTES",
        flag: Some("--batch-bytes"),
        command: None,
        default: Some("4194304"),
        about: "most bytes of line content in one batch (a larger single line goes alone)",
        kind: Kind::Number,
    },
    Setting {
        key: "poll_ms",
        env: "KCAP_POLL_MS",
        flag: Some("--poll-ms"),
        command: None,
        default: Some("300"),
        about: "finalizer: pause between looks at the transcript's last line",
        kind: Kind::Number,
    },
    Setting {
        key: "shutdown_budget_ms",
        env: "KCAP_SHUTDOWN_BUDGET_MS",
        flag: Some("--shutdown-budget-ms"),
        command: None,
        default: Some("45000"),
        about: "finalizer: how long to wait for session.shutdown before draining anyway",
        kind: Kind::Number,
    },
    Setting {
        key: "retry_initial_ms",
        env: "KCAP_RETRY_INITIAL_MS",
        flag: Some("--retry-initial-ms"),
        command: None,
        default: Some("250"),
        about: "first delivery retry delay (doubles per failure)",
        kind: Kind::Number,
    },
    Setting {
        key: "retry_max_ms",
        env: "KCAP_RETRY_MAX_MS",
        flag: Some("--retry-max-ms"),
        command: None,
        default: Some("4000"),
        about: "longest delivery retry delay",
        kind: Kind::Number,
    },
    Setting {
        key: "delivery_budget_ms",
        env: "KCAP_DELIVERY_BUDGET_MS",
        flag: Some("--delivery-budget-ms"),
        command: None,
        default: Some("120000"),
        about: "how long delivery may go without progress before it parks",
        kind: Kind::Number,
    },
    Setting {
        key: "park_retry_ms",
        env: "KCAP_PARK_RETRY_MS",
        flag: Some("--park-retry-ms"),
        command: None,
        default: Some("60000"),
        about: "earliest retry of a parked finalizer by the background sweep",
        kind: Kind::Number,
    },
    Setting {
        key: "hook_drain_cap_ms",
        env: "KCAP_HOOK_DRAIN_CAP_MS",
        flag: Some("--drain-cap-ms"),
        command: Some("hook"),
        default: Some("8000"),
        about: "cap on the sessionEnd hook after the finalizer is spawned",
        kind: Kind::Number,
    },
    Setting {
        key: "watch_poll_ms",
        env: "KCAP_WATCH_POLL_MS",
        flag: Some("--watch-poll-ms"),
        command: Some("watch"),
        default: Some("500"),
        about: "live watcher: pause between looks at the transcript when polling (file notifications wake it at once)",
        kind: Kind::Number,
    },
    Setting {
        key: "watch_idle_ms",
        env: "KCAP_WATCH_IDLE_MS",
        flag: Some("--watch-idle-ms"),
        command: Some("watch"),
        default: Some("7200000"),
        about: "live watcher: end (drain, hand over to a finalizer) once the transcript has not grown for this long; 0 = never",
        kind: Kind::Number,
    },
];

/// Environment variables kcap reads that are not settings of the client (no config-file key),
/// with the flag that matches each where there is one. Listed in `--help` and the README.
pub const OTHER_ENV: &[(&str, &str, &str)] = &[
    (
        "KCAP_CONFIG",
        "",
        "the config file (default $XDG_CONFIG_HOME/kcap/config.toml or ~/.config/kcap/config.toml)",
    ),
    (
        "KCAP_LOG",
        "",
        "log filter, e.g. kcap=debug (default info in log files, warn on a terminal)",
    ),
    (
        "KCAP_SERVER_TOKEN",
        "serve --token",
        "admin bearer token `kcap serve` requires (may write to any session)",
    ),
    (
        "KCAP_DATABASE_URL",
        "serve --database",
        "PostgreSQL URL for `kcap serve` (default: SQLite in <KCAP_HOME>/server)",
    ),
    (
        "KCAP_FOLLOW",
        "",
        "`poll`: the live watcher polls the transcript instead of using file notifications",
    ),
    ("NO_COLOR", "", "any value: no colour in kcap's output"),
];

/// The setting with this config-file key.
pub fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// kcap's built-in default.
    Default,
    /// The config file.
    File,
    /// An environment variable.
    Env,
    /// A command-line flag.
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Default => "default",
            Source::File => "file",
            Source::Env => "env",
            Source::Flag => "flag",
        })
    }
}

/// A setting's value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The value as text (`None`: unset).
    pub value: Option<String>,
    /// Where it came from.
    pub source: Source,
}

/// The value of `setting`: `flag` if given, else its environment variable, else the config
/// file's, else the default. Empty values count as unset, and so does an environment value that
/// does not validate (as an invalid file value does): it is reported (`kcap doctor`, the start-up
/// warning, `kcap config show`) and the next source is used, so what is shown is what is used.
pub fn resolve(setting: &Setting, flag: Option<&str>, file: &ConfigFile) -> Resolved {
    let non_empty = |v: &str| !v.is_empty();
    if let Some(v) = flag.filter(|v| non_empty(v)) {
        return Resolved {
            value: Some(v.to_string()),
            source: Source::Flag,
        };
    }
    if let Some(v) = std::env::var(setting.env)
        .ok()
        .filter(|v| non_empty(v) && validate(setting, v).is_ok())
    {
        return Resolved {
            value: Some(v),
            source: Source::Env,
        };
    }
    if let Some(v) = file.get(setting.key) {
        return Resolved {
            value: Some(v),
            source: Source::File,
        };
    }
    Resolved {
        value: match setting.kind {
            // A path default is a description, not a value: the path functions compute it.
            Kind::Path => None,
            _ => setting.default.map(str::to_string),
        },
        source: Source::Default,
    }
}

/// Checks a value for `setting`; the error says what was expected.
pub fn validate(setting: &Setting, value: &str) -> Result<(), String> {
    match setting.kind {
        Kind::Number => value
            .parse::<u64>()
            .map(|_| ())
            .map_err(|_| format!("{}: {value:?} is not a whole number", setting.key)),
        Kind::Url => {
            // The URL parser silently drops tabs and newlines and trims spaces, so such a value
            // would be stored as typed but used as another: refuse it instead.
            if value.chars().any(char::is_control) || value.trim() != value {
                return Err(format!(
                    "{}: {value:?} has spaces or control characters around or inside it",
                    setting.key
                ));
            }
            let parsed =
                reqwest::Url::parse(value).map_err(|e| format!("{}: {value:?}: {e}", setting.key))?;
            if matches!(parsed.scheme(), "http" | "https") && parsed.host_str().is_some() {
                Ok(())
            } else {
                Err(format!(
                    "{}: {value:?} is not an http:// or https:// URL with a host",
                    setting.key
                ))
            }
        }
        Kind::Secret | Kind::Path => {
            if value.trim().is_empty() || value.contains(['\n', '\r']) {
                Err(format!("{}: empty or multi-line value", setting.key))
            } else if setting.kind == Kind::Secret
                && value.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                // It goes into an Authorization header, where such a character makes every
                // request fail before it is sent.
                Err(format!(
                    "{}: contains spaces or control characters (a token has none)",
                    setting.key
                ))
            } else if setting.kind == Kind::Path && !std::path::Path::new(value).is_absolute() {
                // Hooks run in each session's working directory: a relative path would put
                // kcap's store (or look for an agent's files) in every project.
                Err(format!(
                    "{}: {value:?} is not an absolute path (hooks run in each session's directory)",
                    setting.key
                ))
            } else {
                Ok(())
            }
        }
    }
}

/// How a value is shown: secrets masked, so `config show` can be pasted into an issue.
pub fn display(setting: &Setting, value: &str) -> String {
    if setting.kind == Kind::Secret {
        let n = value.chars().count();
        // The last four characters tell two long tokens apart; on a short one they are too much.
        if n < 12 {
            return format!("set ({n} chars)");
        }
        let tail: String = value.chars().skip(n - 4).collect();
        format!("set ({n} chars, ends …{tail})")
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Timings;

    #[test]
    fn defaults_match_the_code_that_uses_them() {
        let t = Timings::default();
        let default = |key: &str| setting(key).unwrap().default.unwrap().parse::<u64>().unwrap();
        assert_eq!(default("poll_ms"), t.poll_ms);
        assert_eq!(default("shutdown_budget_ms"), t.shutdown_budget_ms);
        assert_eq!(default("retry_initial_ms"), t.retry_initial_ms);
        assert_eq!(default("retry_max_ms"), t.retry_max_ms);
        assert_eq!(default("delivery_budget_ms"), t.delivery_budget_ms);
        assert_eq!(default("park_retry_ms"), t.park_retry_ms);
    }

    #[test]
    fn keys_envs_and_flags_are_unique_and_secrets_have_no_flag() {
        for (i, a) in SETTINGS.iter().enumerate() {
            for b in &SETTINGS[i + 1..] {
                assert_ne!(a.key, b.key);
                assert_ne!(a.env, b.env);
                assert!(a.flag.is_none() || a.flag != b.flag);
            }
            assert!(a.kind != Kind::Secret || a.flag.is_none(), "{}", a.key);
        }
    }

    #[test]
    fn every_agents_root_is_a_setting() {
        for home in crate::agent::HOME_SETTINGS {
            let row = setting(home.key).unwrap_or_else(|| panic!("{} is not in SETTINGS", home.key));
            assert_eq!((row.env, row.kind), (home.env, Kind::Path));
        }
    }

    #[test]
    fn validation_says_what_is_wrong() {
        let url = setting("url").unwrap();
        assert!(validate(url, "https://kcap.example.com").is_ok());
        assert!(validate(url, "ftp://x").is_err());
        assert!(validate(url, "localhost:5108").is_err());
        assert!(validate(url, "http://exa\tmple.com").is_err());
        assert!(validate(url, "http://example.com/\nx").is_err());
        assert!(validate(url, " http://example.com").is_err());
        let n = setting("poll_ms").unwrap();
        assert!(validate(n, "300").is_ok());
        assert!(validate(n, "-1").unwrap_err().contains("whole number"));
        let home = setting("kcap_home").unwrap();
        assert!(validate(home, "/var/lib/kcap").is_ok());
        assert!(validate(home, "./data").unwrap_err().contains("absolute"));
        assert!(validate(home, "~/kcap").unwrap_err().contains("absolute"));
        let token = setting("token").unwrap();
        assert!(validate(token, "abc def")
            .unwrap_err()
            .contains("spaces or control"));
        assert!(validate(token, "abc\u{1}def").is_err());
        assert!(validate(token, "kcap_0123-abc.DEF").is_ok());
        assert_eq!(display(token, "abcdefgh1234"), "set (12 chars, ends …1234)");
        assert_eq!(display(token, "short"), "set (5 chars)");
    }
}
