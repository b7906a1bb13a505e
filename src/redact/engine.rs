//! The compiled catalogue: one keyword automaton over everything a rule needs to see, and the
//! rules' regexes, built once per process.
//!
//! `aho-corasick` finds every keyword of ~230 rules in one pass over the text (a DFA, ASCII
//! case-insensitive), so a line without any keyword costs one scan and a rule's regex only runs
//! where its keyword is. `regex` gives finite-automaton matching with a linear-time guarantee;
//! there is no backtracking engine anywhere in redaction.

use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::Regex;

use super::catalogue::{At, FORMATS, VENDORS};

/// What a keyword occurrence asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// Try this format (index into `FORMATS`).
    Format(u16),
    /// A vendor's name word (index into `VENDORS`): look for a value after the name.
    Vendor(u16),
    /// A secret-like name fragment (`pass`, `token`, `key`…): look for a value after the name.
    Name,
    /// `://`: URL userinfo.
    Url,
    /// `-----BEGIN`: a private key block.
    Pem,
    /// A command whose short flags carry passwords (`mysql -pX`, `curl -u user:pw`).
    Command,
    /// `Private-Lines:` of a PuTTY key file.
    Putty,
    /// `kind: Secret`: a Kubernetes Secret's data values.
    K8sSecret,
    /// `\tTRUE\t/`: a Netscape cookie jar line.
    CookieJar,
}

/// Name fragments that make a key worth a look; the named scanner decides on the whole name.
/// `pin` and `sig` are common inside words (`mapping`, `design`): they count only next to an
/// assignment.
const NAME_WORDS: &[&str] = &[
    "pass",
    // `expect "assword:"`: the prompt pattern of an expect script, without its first letter.
    "assword",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "cred",
    "cookie",
    "bearer",
    "pin=",
    "pin:",
    "pin\"",
    "pin'",
    "pin ",
    "pin_",
    "sig=",
    "sig\"",
    "sig:",
    // Session cookies and ids (`Cookie: session=…`, `sessionid=…`, `JSESSIONID=…`).
    "sessionid",
    "sessid",
    // `SESSION_ID=…`, `X-Session-Id: …`.
    "session_id",
    "session-id",
    "session=",
    "session\"",
    "session'",
];

const COMMANDS: &[&str] = &[
    "mysql",
    "mariadb",
    "curl",
    "sshpass",
    "docker",
    "podman",
    "sudo",
    "htpasswd",
    "redis-cli",
    "mongo",
    "smbclient",
    "rpcclient",
];

pub(crate) struct Engine {
    pub ac: AhoCorasick,
    /// Per automaton pattern: what its occurrences ask for.
    pub targets: Vec<Vec<Target>>,
    /// Per format: its regex (anchored at the start of the haystack for `At::Keyword`).
    pub formats: Vec<Regex>,
    /// Per vendor: a whole-value regex.
    pub vendors: Vec<Regex>,
}

/// The process-wide engine (compiled on first use, ~50 ms).
pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::build().unwrap_or_else(|e| panic!("the built-in redaction catalogue does not compile: {e}"))
    })
}

impl Engine {
    fn build() -> Result<Engine, String> {
        let mut words: Vec<String> = Vec::new();
        let mut targets: Vec<Vec<Target>> = Vec::new();
        let mut add = |word: &str, target: Target| {
            let word = word.to_ascii_lowercase();
            match words.iter().position(|w| *w == word) {
                Some(i) => {
                    if !targets[i].contains(&target) {
                        targets[i].push(target)
                    }
                }
                None => {
                    words.push(word);
                    targets.push(vec![target]);
                }
            }
        };
        for (i, f) in FORMATS.iter().enumerate() {
            for k in f.keywords {
                add(k, Target::Format(i as u16));
            }
        }
        for (i, v) in VENDORS.iter().enumerate() {
            for n in v.names {
                add(n, Target::Vendor(i as u16));
            }
        }
        for n in NAME_WORDS {
            add(n, Target::Name);
        }
        add("://", Target::Url);
        add("-----begin", Target::Pem);
        for c in COMMANDS {
            add(c, Target::Command);
        }
        add("private-lines:", Target::Putty);
        for k in ["\ttrue\t/", "\tfalse\t/"] {
            add(k, Target::CookieJar);
        }
        for k in [
            "kind: secret",
            "kind: \"secret\"",
            "kind: 'secret'",
            "\"kind\": \"secret\"",
            "\"kind\":\"secret\"",
        ] {
            add(k, Target::K8sSecret);
        }
        // Leftmost-longest reports one keyword per position (fewer, cheaper stops than
        // overlapping search); a keyword that is a prefix of the one found (`sk-` of `sk-ant-`,
        // `key` of `key-`) still gets its say through the longer keyword's targets.
        let closed: Vec<Vec<Target>> = words
            .iter()
            .map(|w| {
                let mut all: Vec<Target> = Vec::new();
                for (j, shorter) in words.iter().enumerate() {
                    if w.starts_with(shorter.as_str()) {
                        for t in &targets[j] {
                            if !all.contains(t) {
                                all.push(*t);
                            }
                        }
                    }
                }
                all
            })
            .collect();
        let (words, targets) = with_overlaps(words, closed);
        let ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .kind(Some(AhoCorasickKind::DFA))
            // The keywords' first bytes are most letters: a prefilter would stop at nearly every
            // byte and cost more than the DFA it skips to.
            .prefilter(false)
            .build(&words)
            .map_err(|e| e.to_string())?;
        let formats = FORMATS
            .iter()
            .map(|f| {
                let pattern = match f.at {
                    At::Keyword => format!("^(?:{})", f.pattern),
                    At::Search => f.pattern.to_string(),
                };
                Regex::new(&pattern).map_err(|e| format!("{}: {e}", f.id))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let vendors = VENDORS
            .iter()
            .map(|v| Regex::new(&format!("^(?i:{})$", v.value)).map_err(|e| format!("{}: {e}", v.id)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Engine {
            ac,
            targets,
            formats,
            vendors,
        })
    }
}

/// Non-overlapping search reports one keyword where two overlap: in `AccessKey`, Twilio's `SK`
/// prefix (at `sK`) hides the name word `key` that starts on its `k`, and the value after
/// `SharedAccessKey=` was never judged. Each such overlap of a format prefix's end with a
/// name word's start becomes a keyword of its own (`skey`) carrying both words' targets; the
/// name scanner widens any keyword position to the whole name, so the name's start needs no
/// position of its own. A keyword that holds a name word further in (`accountkey`) also carries
/// the name's targets for the same reason.
fn with_overlaps(mut words: Vec<String>, mut targets: Vec<Vec<Target>>) -> (Vec<String>, Vec<Vec<Target>>) {
    // Name words only (vendor names are many, and each combination grows the automaton, which
    // costs throughput on every line), overlapped by format prefixes only.
    let is_name = |t: &Target| matches!(t, Target::Name);
    let names: Vec<(String, Vec<Target>)> = words
        .iter()
        .zip(&targets)
        .filter(|(w, ts)| w.len() >= 3 && ts.iter().any(is_name))
        .map(|(w, ts)| (w.clone(), ts.iter().copied().filter(is_name).collect()))
        .collect();
    let mut extra: Vec<(String, Vec<Target>)> = Vec::new();
    for (w, ts) in words.iter().zip(targets.iter_mut()) {
        // Any keyword that is not itself a name word may hide one (`htpasswd` and `sshpass`
        // hid `pass`, so `HTPASSWD=…` and `SSHPASS=…` were never judged).
        if !ts.iter().any(|t| !matches!(t, Target::Name)) {
            continue;
        }
        let format = ts.iter().any(|t| matches!(t, Target::Format(_)));
        for (n, nts) in &names {
            if w.len() > n.len() && w[1..].contains(n.as_str()) {
                for t in nts {
                    if !ts.contains(t) {
                        ts.push(*t);
                    }
                }
            }
            if !format {
                continue;
            }
            for o in 1..w.len().min(n.len()) {
                if w.ends_with(&n[..o]) {
                    let mut all = ts.clone();
                    all.extend(nts.iter().copied().filter(|t| !ts.contains(t)));
                    extra.push((format!("{w}{}", &n[o..]), all));
                }
            }
        }
    }
    for (w, ts) in extra {
        if !words.contains(&w) {
            words.push(w);
            targets.push(ts);
        }
    }
    (words, targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_keyword_holding_a_name_word_keeps_the_name() {
        let e = engine();
        for text in ["HTPASSWD=S3cretPw9x", "SSHPASS='Zx9Qw2Er5Ty7' sshpass -e ssh h"] {
            let named =
                e.ac.find_iter(text)
                    .any(|m| e.targets[m.pattern().as_usize()].contains(&Target::Name));
            assert!(named, "no name keyword found in {text}");
        }
    }

    #[test]
    fn a_keyword_overlapping_a_name_word_keeps_the_name() {
        let e = engine();
        let text = "SharedAccessKey=q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE";
        let named =
            e.ac.find_iter(text)
                .any(|m| e.targets[m.pattern().as_usize()].contains(&Target::Name));
        assert!(named, "no name keyword found in {text}");
    }

    #[test]
    fn the_catalogue_compiles_and_every_format_has_a_keyword() {
        let e = engine();
        assert_eq!(e.formats.len(), FORMATS.len());
        assert!(
            FORMATS.len() + VENDORS.len() >= 200,
            "{} formats",
            FORMATS.len() + VENDORS.len()
        );
        for f in FORMATS {
            assert!(!f.keywords.is_empty(), "{}", f.id);
            assert!(
                f.keywords.iter().all(|k| !k.is_empty() && k.is_ascii()),
                "{}",
                f.id
            );
        }
        let mut ids: Vec<&str> = FORMATS
            .iter()
            .map(|f| f.id)
            .chain(VENDORS.iter().map(|v| v.id))
            .collect();
        ids.sort_unstable();
        let before = ids.len();
        ids.dedup();
        assert_eq!(before, ids.len(), "duplicate rule ids");
    }
}
