//! `kcap login --url <URL> [--token <T>]`, and the authenticated probe it shares with `kcap
//! doctor`: `GET /api/sessions?limit=1` with the bearer token, which any valid token may read.

use std::time::Duration;

use crate::config::ConfigFile;
use crate::protocol::CLI_VERSION_HEADER;

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The server answered 2xx with a JSON list: URL and token are good.
    Ok,
    /// 401: the server wants a token and this one is missing or wrong.
    Unauthorized,
    /// Something answered, but not as a kcap server does (status and a hint).
    NotKcap(String),
    /// Nothing listens there (connection refused, or the host does not resolve).
    NoServer(String),
    /// Reached, but no answer in time, or another transport error.
    Unreachable(String),
}

/// One authenticated request to `url` within a few seconds.
pub async fn probe(url: &str, token: Option<&str>) -> Probe {
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(5)).build() {
        Ok(c) => c,
        Err(e) => return Probe::Unreachable(e.to_string()),
    };
    let mut req = client
        .get(format!("{}/api/sessions?limit=1", url.trim_end_matches('/')))
        .header(CLI_VERSION_HEADER, env!("CARGO_PKG_VERSION"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    match req.send().await {
        // A catch-all web server (a landing page, a proxy's default site) answers 200 to any
        // path; only a kcap server answers this one with a JSON list of sessions.
        Ok(r) if r.status().is_success() => {
            let status = r.status();
            match r.json::<serde_json::Value>().await {
                Ok(serde_json::Value::Array(_)) => Probe::Ok,
                _ => Probe::NotKcap(format!(
                    "GET /api/sessions answered HTTP {status} without a JSON list of sessions"
                )),
            }
        }
        Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED => Probe::Unauthorized,
        Ok(r) => Probe::NotKcap(format!("GET /api/sessions answered HTTP {}", r.status())),
        Err(e) if e.is_connect() => Probe::NoServer(root_cause(&e)),
        Err(e) if e.is_timeout() => Probe::Unreachable("no answer within 5 s".into()),
        Err(e) => Probe::Unreachable(root_cause(&e)),
    }
}

/// The innermost error: "Connection refused (os error 111)" rather than reqwest's wrapper.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Checks `url` and `token` with the probe; saves both to the config file only if they work.
pub async fn login(url: &str, token: Option<&str>) -> Result<String, String> {
    let setting = crate::config::settings::setting("url").expect("url is a setting");
    crate::config::settings::validate(setting, url)?;
    let url = url.trim_end_matches('/');
    let token = match token {
        Some(t) => Some(crate::cli::config::value_or_stdin(t)?).filter(|t| !t.is_empty()),
        None => None,
    };
    if let Some(t) = &token {
        let setting = crate::config::settings::setting("token").expect("token is a setting");
        crate::config::settings::validate(setting, t)?;
    }
    match probe(url, token.as_deref()).await {
        Probe::Ok => {}
        Probe::Unauthorized if token.is_none() => {
            return Err(format!(
                "{url} requires a token: run `kcap login --url {url} --token <TOKEN>` with the token \
                 its admin gave you (`kcap serve token add <name>`); nothing was saved"
            ))
        }
        Probe::Unauthorized => {
            return Err(format!(
                "{url} refused the token (HTTP 401): it is wrong or was revoked; nothing was saved"
            ))
        }
        Probe::NotKcap(why) => return Err(format!("{url} is not a kcap server ({why}); nothing was saved")),
        Probe::NoServer(why) => {
            return Err(format!(
                "no server at {url} ({why}): check the URL, or start one with `kcap serve`; nothing was saved"
            ))
        }
        Probe::Unreachable(why) => return Err(format!("cannot reach {url}: {why}; nothing was saved")),
    }
    let mut file = ConfigFile::load();
    file.set("url", url)?;
    match &token {
        Some(t) => file.set("token", t)?,
        None => {
            file.unset("token")?;
        }
    }
    file.save()?;
    let mut out = format!(
        "logged in: {url} {}; saved to {} (mode 0600), which the hooks read",
        if token.is_some() {
            "accepts the token"
        } else {
            "needs no token"
        },
        file.path.display()
    );
    for env in ["KCAP_URL", "KCAP_TOKEN"] {
        if std::env::var(env).is_ok_and(|v| !v.is_empty()) {
            out.push_str(&format!(
                "\nnote: {env} is set in this shell and overrides the file for commands run from it"
            ));
        }
    }
    Ok(out)
}
