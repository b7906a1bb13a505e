//! The `Host` check against DNS rebinding. A page on `attacker.example` can make its name
//! resolve to 127.0.0.1 and then talk to a server on loopback as its own origin; the browser
//! still sends `Host: attacker.example`. A server bound to loopback therefore answers only
//! requests addressed to a loopback name or an IP literal (an IP origin is not rebindable), plus
//! the names given with `--allowed-host`. A server bound elsewhere is reached by names we
//! cannot guess: it checks only when `--allowed-host` lists them, or when it has no token at all
//! (then a rebinding page in a colleague's browser could read and write it as that colleague).

use std::net::{IpAddr, SocketAddr};

/// Which `Host` values a server answers.
#[derive(Debug, Clone)]
pub struct HostGuard {
    enforce: bool,
    allowed: Vec<String>,
}

/// What [`HostGuard::admits`] decides for one `Host` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit,
    Refuse,
    /// A name the guard cannot vouch for on a server bound beyond loopback: answered only when
    /// the server requires a token (a rebinding page has none to send).
    IfTokenRequired,
}

impl HostGuard {
    /// The guard of a server bound to `bound`, with the extra names in `allowed` (host names,
    /// optionally with a port, which is ignored).
    pub fn new(bound: SocketAddr, allowed: &[String]) -> HostGuard {
        let allowed: Vec<String> = allowed
            .iter()
            .map(|h| normalize(h))
            .filter(|h| !h.is_empty())
            .collect();
        HostGuard {
            enforce: bound.ip().is_loopback() || !allowed.is_empty(),
            allowed,
        }
    }

    /// Whether a request with this `Host` header (`None`: absent, as from HTTP/1.0 tools; no
    /// browser omits it) may be answered.
    pub fn admits(&self, host: Option<&str>) -> Admission {
        let Some(host) = host else {
            return Admission::Admit;
        };
        let name = normalize(host);
        let vouched = name.parse::<IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.allowed.contains(&name);
        match (vouched, self.enforce) {
            (true, _) => Admission::Admit,
            (false, true) => Admission::Refuse,
            (false, false) => Admission::IfTokenRequired,
        }
    }
}

/// The host name of a `Host` value: lower case, without port, brackets or a trailing dot.
fn normalize(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_server_answers_loopback_names_ip_literals_and_allowed_hosts_only() {
        let guard = HostGuard::new("127.0.0.1:5108".parse().unwrap(), &["Kcap.Example.com".into()]);
        for ok in [
            "127.0.0.1:5108",
            "localhost:5108",
            "LOCALHOST.",
            "app.localhost",
            "[::1]:5108",
            "10.0.0.7",
            "kcap.example.com:443",
        ] {
            assert_eq!(guard.admits(Some(ok)), Admission::Admit, "{ok}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:5108",
            "localhost.attacker.example",
            "",
            "127.0.0.1.nip.io",
        ] {
            assert_eq!(guard.admits(Some(bad)), Admission::Refuse, "{bad}");
        }
        assert_eq!(guard.admits(None), Admission::Admit);
        let public = HostGuard::new("0.0.0.0:5108".parse().unwrap(), &[]);
        assert_eq!(
            public.admits(Some("kcap.example.com")),
            Admission::IfTokenRequired
        );
        assert_eq!(public.admits(Some("10.1.2.3:5108")), Admission::Admit);
        assert_eq!(public.admits(Some("localhost")), Admission::Admit);
        let listed = HostGuard::new("0.0.0.0:5108".parse().unwrap(), &["kcap.example.com".into()]);
        assert_eq!(listed.admits(Some("attacker.example")), Admission::Refuse);
        assert_eq!(listed.admits(Some("kcap.example.com")), Admission::Admit);
    }
}
