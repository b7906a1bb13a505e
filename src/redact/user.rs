//! The user's own rules, from the `[redact]` table of kcap's config file:
//!
//! ```toml
//! [redact]
//! patterns = [{ name = "acme-key", regex = "acme_[0-9a-f]{32}" }]
//! allow = ["AKIAIOSFODNN7EXAMPLE", "/^test_[a-z]+$/"]
//! ```
//!
//! A pattern's matches are redacted wherever they occur (in decoded JSON strings, like the
//! built-in rules). An `allow` entry keeps a finding whose text equals it; an entry written
//! `/regex/` keeps findings whose whole text matches the regex.

use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

/// Compiled user patterns and allowlist.
#[derive(Default)]
pub struct UserRules {
    pub(crate) patterns: Vec<(String, Regex)>,
    pub(crate) allow: Vec<Allow>,
}

pub(crate) enum Allow {
    Literal(String),
    Regex(Regex),
}

#[derive(Deserialize, Default)]
struct File {
    #[serde(default)]
    redact: Table,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Table {
    #[serde(default)]
    patterns: Vec<Pattern>,
    #[serde(default)]
    allow: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Pattern {
    name: String,
    regex: String,
}

/// kcap's config file, as every command finds it ([`crate::config::config_path`]).
pub fn config_path() -> Option<PathBuf> {
    Some(crate::config::config_path())
}

impl UserRules {
    /// Parses the `[redact]` table out of a config file's text (other tables are ignored).
    pub fn parse(toml_text: &str) -> Result<UserRules, String> {
        let file: File = toml::from_str(toml_text).map_err(|e| format!("not valid TOML for kcap: {e}"))?;
        let patterns = file
            .redact
            .patterns
            .into_iter()
            .map(|p| {
                if p.regex.is_empty() {
                    return Err(format!("[redact] pattern {:?}: the regex is empty", p.name));
                }
                Regex::new(&p.regex)
                    .map(|re| (p.name.clone(), re))
                    .map_err(|e| format!("[redact] pattern {:?}: bad regex: {e}", p.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let allow = file
            .redact
            .allow
            .into_iter()
            .map(|a| match a.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
                Some(re) if a.len() >= 2 => Regex::new(&format!("^(?:{re})$"))
                    .map(Allow::Regex)
                    .map_err(|e| format!("[redact] allow entry {a:?}: bad regex: {e}")),
                _ => Ok(Allow::Literal(a)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(UserRules { patterns, allow })
    }

    /// Reads the rules from `path`; a missing file means no user rules.
    pub fn load(path: &Path) -> Result<UserRules, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => UserRules::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UserRules::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Whether the allowlist keeps `found`.
    pub(crate) fn allows(&self, found: &str) -> bool {
        self.allow.iter().any(|a| match a {
            Allow::Literal(l) => l == found,
            Allow::Regex(re) => re.is_match(found),
        })
    }

    /// The name of user pattern `k`.
    pub(crate) fn name(&self, k: usize) -> &str {
        self.patterns.get(k).map_or("user-pattern", |p| p.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redact_table_is_read_and_errors_name_the_rule() {
        let r = UserRules::parse(
            "url = \"http://x\"\n[other]\nk = 1\n[redact]\npatterns = [{ name = \"acme\", regex = \"acme_[0-9]+\" }]\nallow = [\"a\", \"/b+/\"]\n",
        )
        .unwrap();
        assert_eq!(r.patterns.len(), 1);
        assert!(r.allows("a") && r.allows("bbb") && !r.allows("ab"));
        let e = UserRules::parse("[redact]\npatterns = [{ name = \"broken\", regex = \"(\" }]")
            .err()
            .unwrap();
        assert!(e.contains("\"broken\"") && e.contains("bad regex"), "{e}");
        assert!(UserRules::parse("[redact]\npaterns = []").is_err());
        assert_eq!(
            UserRules::load(Path::new("/nonexistent/kcap.toml"))
                .unwrap()
                .patterns
                .len(),
            0
        );
    }
}
