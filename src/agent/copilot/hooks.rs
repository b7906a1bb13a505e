//! Copilot's hooks: the file kcap owns in `$COPILOT_HOME/hooks/`, the payloads Copilot writes on
//! a hook's stdin, and the command-line spellings its hooks files and earlier versions use.

use std::path::{Path, PathBuf};

use super::EVENTS;
use crate::agent::HookPayload;
use crate::ids::SessionId;

/// The hooks file kcap owns in `$COPILOT_HOME/hooks/`.
const HOOKS_FILE: &str = "kcap.json";

/// `$COPILOT_HOME/hooks/kcap.json`.
pub fn path(home: &Path) -> PathBuf {
    home.join("hooks").join(HOOKS_FILE)
}

/// Copilot's documented hooks-file format: one command entry per event. The command keeps the
/// `--copilot` spelling, so files installed by earlier versions stay current.
pub fn document() -> serde_json::Value {
    let mut hooks = serde_json::Map::new();
    for (event, _) in EVENTS {
        hooks.insert(
            event.to_string(),
            serde_json::json!([{
                "type": "command",
                "command": format!("kcap hook --copilot --event {event}"),
                "timeoutSec": 30
            }]),
        );
    }
    serde_json::json!({ "version": 1, "hooks": hooks })
}

/// A hook's stdin: a JSON object naming the session as `sessionId` (camelCase payloads) or
/// `session_id` (PascalCase ones).
pub fn parse(payload: &[u8]) -> Result<HookPayload, String> {
    let raw: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
    if !raw.is_object() {
        return Err("payload is not a JSON object".into());
    }
    let session: SessionId = raw
        .get("sessionId")
        .or_else(|| raw.get("session_id"))
        .and_then(|v| v.as_str())
        .ok_or("payload has no sessionId")?
        .parse()
        .map_err(|e: crate::ids::InvalidSessionId| e.to_string())?;
    let field = |k: &str| raw.get(k).cloned().unwrap_or(serde_json::Value::Null);
    Ok(HookPayload {
        session,
        reason: field("reason"),
        source: field("source"),
        cwd: field("cwd"),
        raw,
    })
}

/// `--copilot` on `hook`, `plugin` and `import` (what Copilot's hooks file runs, and what
/// scripts of earlier versions pass) and `copilot-finalize` for `finalizer`.
pub fn legacy_cli(cmd: clap::Command) -> clap::Command {
    let flag = || {
        clap::Arg::new("copilot")
            .long("copilot")
            .action(clap::ArgAction::SetTrue)
            .conflicts_with("agent")
            .help("Same as --agent copilot (the spelling Copilot's hooks file and earlier versions use)")
    };
    ["hook", "plugin", "import"]
        .into_iter()
        .fold(cmd, |cmd, name| cmd.mut_subcommand(name, |c| c.arg(flag())))
        .mut_subcommand("finalizer", |c| c.visible_alias("copilot-finalize"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_their_session_either_way() {
        let sid = SessionId::new_random();
        let camel = format!(r#"{{"sessionId":"{sid}","cwd":"/w","reason":"complete"}}"#);
        let parsed = parse(camel.as_bytes()).unwrap();
        assert_eq!(parsed.session, sid);
        assert_eq!(parsed.cwd, "/w");
        assert_eq!(parsed.reason, "complete");
        assert_eq!(parsed.source, serde_json::Value::Null);
        let snake = format!(r#"{{"session_id":"{}"}}"#, sid.dashless());
        assert_eq!(parse(snake.as_bytes()).unwrap().session, sid);
    }

    #[test]
    fn bad_payloads_say_why() {
        for (payload, why) in [
            (&b"not json"[..], "not JSON"),
            (b"[1]", "not a JSON object"),
            (b"{}", "no sessionId"),
            (br#"{"sessionId":"../../etc"}"#, ""),
        ] {
            let e = parse(payload).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn the_hooks_file_runs_kcap_for_every_event() {
        let doc = document();
        for (event, _) in EVENTS {
            let command = doc["hooks"][event][0]["command"].as_str().unwrap();
            assert_eq!(command, format!("kcap hook --copilot --event {event}"));
        }
    }
}
