//! `kcap login` and `kcap doctor` against a server that wants a token, one that wants none, and
//! none at all.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use common::*;
use kcap::server::Server;

const TOKEN: &str = "team-token-0123456789";

/// A PATH holding only this build's kcap, as an installed one would be.
fn path_with_kcap(env: &Env) -> PathBuf {
    let bin = env.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("kcap");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kcap"), &link).unwrap();
    }
    bin
}

/// `kcap <args>` with the config file as the only source of URL and token.
async fn kcap(env: &Env, args: &[&str]) -> (i32, String, String) {
    let out = env
        .kcap("http://unused.invalid")
        .env_remove("KCAP_URL")
        .env_remove("KCAP_TOKEN")
        .env("PATH", path_with_kcap(env))
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn server_with_token() -> Server {
    Server::start(SocketAddr::from(([127, 0, 0, 1], 0)), Some(TOKEN.into()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn login_refuses_a_wrong_or_missing_token_and_saves_a_good_one() {
    let (env, server) = (Env::new(), server_with_token().await);
    let url = server.url();
    let (code, _, err) = kcap(&env, &["login", "--url", &url, "--token", "wrong-token"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("refused the token") && err.contains("nothing was saved"),
        "{err}"
    );
    assert!(
        !env.config_path().exists(),
        "a refused login wrote the config file"
    );

    let (code, _, err) = kcap(&env, &["login", "--url", &url]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("requires a token") && err.contains("kcap login --url"),
        "{err}"
    );
    assert!(!env.config_path().exists());

    let (code, _, err) = kcap(&env, &["login", "--url", &format!("http://{}", free_port())]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no server at"), "{err}");

    let (code, out, err) = kcap(&env, &["login", "--url", &url, "--token", TOKEN]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains(TOKEN), "login printed the token: {out}");
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    assert!(text.contains(&url) && text.contains(TOKEN), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.config_path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_with_the_right_token_says_everything_looks_right() {
    let (env, server) = (Env::new(), server_with_token().await);
    std::fs::create_dir_all(&env.copilot_home).unwrap();
    assert_eq!(kcap(&env, &["plugin", "install"]).await.0, 0);
    let (code, ..) = kcap(&env, &["login", "--url", &server.url(), "--token", TOKEN]).await;
    assert_eq!(code, 0);
    let (code, out, err) = kcap(&env, &["doctor"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok   server") && out.contains("accepts the token"),
        "{out}"
    );
    assert!(out.contains("everything looks right"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_without_the_token_says_to_log_in() {
    let (env, server) = (Env::new(), server_with_token().await);
    std::fs::create_dir_all(&env.copilot_home).unwrap();
    assert_eq!(kcap(&env, &["plugin", "install"]).await.0, 0);
    assert_eq!(kcap(&env, &["config", "set", "url", &server.url()]).await.0, 0);
    let (code, out, _) = kcap(&env, &["doctor"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FIX  server") && out.contains("token missing") && out.contains("kcap login --url"),
        "{out}"
    );
    // A wrong one is named as wrong.
    assert_eq!(
        kcap(&env, &["config", "set", "token", "not-the-token"]).await.0,
        0
    );
    let (code, out, _) = kcap(&env, &["doctor"]).await;
    assert_eq!(code, 1);
    assert!(out.contains("token wrong"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_with_no_server_running_says_how_to_start_one() {
    let env = Env::new();
    std::fs::create_dir_all(&env.copilot_home).unwrap();
    assert_eq!(kcap(&env, &["plugin", "install"]).await.0, 0);
    let url = format!("http://{}", free_port());
    assert_eq!(kcap(&env, &["config", "set", "url", &url]).await.0, 0);
    let (code, out, _) = kcap(&env, &["doctor"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("no server at {url}")) && out.contains("start `kcap serve` or run `kcap login"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_finds_what_is_missing_or_contradicts_the_config() {
    let (env, server) = (Env::new(), server().await);
    assert_eq!(kcap(&env, &["config", "set", "url", &server.url()]).await.0, 0);
    // No hooks file, no kcap on PATH, and an environment that overrides the file.
    let out = env
        .kcap("http://127.0.0.1:9")
        .env("PATH", env.dir.path().join("empty-bin"))
        .arg("doctor")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for expected in [
        "FIX  kcap     not on PATH",
        "FIX  hooks    not installed",
        "KCAP_URL (http://127.0.0.1:9) overrides url in the config file",
        "FIX  server   no server at http://127.0.0.1:9",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    // A hooks file that runs another binary than the kcap on PATH.
    let hooks = env.copilot_home.join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    std::fs::write(
        hooks.join("kcap.json"),
        r#"{"version":1,"hooks":{"sessionEnd":[{"type":"command","command":"/opt/old/kcap hook --copilot --event sessionEnd"}]}}"#,
    )
    .unwrap();
    let (code, out, _) = kcap(&env, &["doctor"]).await;
    assert_eq!(code, 1);
    assert!(
        out.contains("runs /opt/old/kcap, which is not the kcap on PATH"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_says_when_the_store_is_unusable() {
    let (env, server) = (Env::new(), server().await);
    // KCAP_HOME is a file: no store can be opened under it.
    std::fs::write(&env.kcap_home, b"not a directory").unwrap();
    let out = env.kcap(&server.url()).arg("doctor").output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FIX  store") && text.contains("unusable"), "{text}");
}

/// A web server that answers 200 with a page to every request, as a landing page or a proxy's
/// default site does: it is not a kcap server, whatever its status says.
fn catch_all_server() -> SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let body = "<html>welcome</html>";
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn login_and_doctor_refuse_a_web_server_that_is_not_kcap() {
    let env = Env::new();
    let url = format!("http://{}", catch_all_server());
    let (code, out, err) = kcap(&env, &["login", "--url", &url]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("is not a kcap server") && err.contains("nothing was saved"),
        "{err}"
    );
    assert!(
        !env.config_path().exists(),
        "login saved a URL that is not a kcap server"
    );
    let (code, out, _) = kcap(&env, &["--url", &url, "doctor"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FIX  server") && out.contains("is not a kcap server"),
        "{out}"
    );
}
