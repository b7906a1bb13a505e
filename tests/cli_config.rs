//! The config file: precedence (default < file < environment < flag), `config set` / `show`,
//! and hooks that read it with no KCAP_* variable in their environment.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// `kcap config show --json` in `env`, after `setup` (environment, flags before the subcommand).
async fn show(env: &Env, setup: impl FnOnce(&mut tokio::process::Command)) -> Value {
    let mut cmd = env.kcap("http://unused.invalid");
    cmd.env_remove("KCAP_URL").env_remove("KCAP_POLL_MS");
    setup(&mut cmd);
    cmd.args(["config", "show", "--json"]);
    let out = cmd.output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn setting<'a>(shown: &'a Value, key: &str) -> (&'a str, &'a str) {
    let row = shown["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no {key} in {shown}"));
    (
        row["value"].as_str().unwrap_or("-"),
        row["source"].as_str().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn file_then_environment_then_flag() {
    let env = Env::new();
    let shown = show(&env, |_| {}).await;
    assert_eq!(setting(&shown, "url"), ("http://127.0.0.1:5108", "default"));
    assert_eq!(setting(&shown, "poll_ms"), ("300", "default"));
    assert_eq!(shown["exists"], false);

    let set = env
        .kcap("http://unused.invalid")
        .args(["config", "set", "url", "http://from-file.invalid:1"])
        .output()
        .await
        .unwrap();
    assert!(set.status.success(), "{set:?}");
    let set = env
        .kcap("http://unused.invalid")
        .args(["config", "set", "poll_ms", "111"])
        .output()
        .await
        .unwrap();
    assert!(set.status.success(), "{set:?}");
    let shown = show(&env, |_| {}).await;
    assert_eq!(setting(&shown, "url"), ("http://from-file.invalid:1", "file"));
    assert_eq!(setting(&shown, "poll_ms"), ("111", "file"));

    let shown = show(&env, |c| {
        c.env("KCAP_URL", "http://from-env.invalid:2")
            .env("KCAP_POLL_MS", "222");
    })
    .await;
    assert_eq!(setting(&shown, "url"), ("http://from-env.invalid:2", "env"));
    assert_eq!(setting(&shown, "poll_ms"), ("222", "env"));

    // An environment value that is not valid is not used: the file's is, and show says so.
    let shown = show(&env, |c| {
        c.env("KCAP_POLL_MS", "soon");
    })
    .await;
    assert_eq!(setting(&shown, "poll_ms"), ("111", "file"));

    let shown = show(&env, |c| {
        c.env("KCAP_URL", "http://from-env.invalid:2")
            .env("KCAP_POLL_MS", "222")
            .args(["--url", "http://from-flag.invalid:3", "--poll-ms", "333"]);
    })
    .await;
    assert_eq!(setting(&shown, "url"), ("http://from-flag.invalid:3", "flag"));
    assert_eq!(setting(&shown, "poll_ms"), ("333", "flag"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_file_is_private_keeps_other_tables_and_refuses_bad_values() {
    let env = Env::new();
    let path = env.config_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "# the team's settings\n[redact]\nallow = [\"example\"]\n").unwrap();
    let out = env
        .kcap("http://unused.invalid")
        .args(["config", "set", "token", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = out;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = out.stdin.take().unwrap();
        stdin.write_all(b"tok-0123456789abcdef\n").await.unwrap();
    }
    let out = out.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("tok-0123456789abcdef"),
        "the token was printed: {stdout}"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("token = \"tok-0123456789abcdef\""), "{text}");
    assert!(
        text.contains("# the team's settings") && text.contains("[redact]"),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    for (key, value, expected) in [
        ("poll_ms", "soon", "whole number"),
        ("url", "localhost:5108", "http"),
        ("colour", "blue", "unknown key"),
    ] {
        let out = env
            .kcap("http://unused.invalid")
            .args(["config", "set", key, value])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{key}={value}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(expected), "{out:?}");
    }
    // A show of the masked token, and no panic on a file that is not TOML at all.
    std::fs::write(&path, "url = [\u{0}").unwrap();
    let shown = show(&env, |_| {}).await;
    assert!(
        shown["problems"][0].as_str().unwrap().contains("not valid TOML"),
        "{shown}"
    );
    assert_eq!(setting(&shown, "url").1, "default");
}

/// Copilot starts hooks without KCAP_URL: the config file is what sends them to the server.
#[tokio::test(flavor = "multi_thread")]
async fn hooks_read_the_server_from_the_config_file() {
    let (env, server) = (Env::new(), server().await);
    let path = env.config_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, format!("url = \"{}\"\n", server.url())).unwrap();
    let content = transcript();
    let (before, shutdown) = split_at_last_shutdown(&content);
    let (sid, path) = env.session(&before);
    append(&path, &shutdown);
    let mut cmd = env.kcap("http://unused.invalid");
    cmd.env_remove("KCAP_URL")
        .args(["hook", "--event", "sessionEnd"])
        .env("KCAP_HOOK_DRAIN_CAP_MS", "4000")
        .stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(&payload(&sid.to_string(), json!({"reason": "user_exit"})))
            .await
            .unwrap();
    }
    assert!(child.wait().await.unwrap().success());
    wait_for(
        "the finalizer to drain via the configured URL",
        Duration::from_secs(20),
        || is_drained(&env.store(), sid),
    )
    .await;
    assert_exactly_once(&server, sid, &content);
}

/// Hooks run in each session's directory: a relative path given to `config set` is stored as
/// the absolute path it means here, and one written by hand into the file is refused.
#[tokio::test(flavor = "multi_thread")]
async fn paths_in_the_file_are_absolute() {
    let env = Env::new();
    let out = env
        .kcap("http://unused.invalid")
        .current_dir(env.dir.path())
        .args(["config", "set", "kcap_home", "data"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    let wanted = env.dir.path().join("data");
    assert!(
        text.contains(&format!("kcap_home = {:?}", wanted.display().to_string())),
        "{text}"
    );

    std::fs::write(env.config_path(), "copilot_home = \"relative/copilot\"\n").unwrap();
    let shown = show(&env, |c| {
        c.env_remove("COPILOT_HOME");
    })
    .await;
    assert_eq!(setting(&shown, "copilot_home").1, "default");
    assert!(
        shown["problems"].to_string().contains("not an absolute path"),
        "{shown}"
    );
}
