//! URL userinfo: `scheme://user:password@host`. The userinfo ends at the last `@` before the
//! host's end, so a password may contain `@` (and be of any length); only the password is
//! redacted, the user name stays for context.

use super::value::is_placeholder;

/// The password range of a URL whose `://` is at `at`.
pub(crate) fn password(b: &[u8], at: usize) -> Option<(usize, usize)> {
    let start = at + 3;
    // The authority ends at the first byte that cannot be in it; the userinfo at the last `@`
    // before that. Stopping at `/` keeps the scan linear over many URLs in a row.
    let len = b[start..]
        .iter()
        .take_while(|c| {
            !matches!(
                c,
                b'/' | b'?' | b'#' | b' ' | b'\t' | b'\n' | b'\r' | b'"' | b'\'' | b'`' | b'<' | b'>' | b'\\'
            )
        })
        .count();
    let authority = &b[start..start + len];
    let at_sign = memchr::memrchr(b'@', authority)?;
    let colon = memchr::memchr(b':', &authority[..at_sign])?;
    let (ps, pe) = (start + colon + 1, start + at_sign);
    let pw = std::str::from_utf8(&b[ps..pe]).ok()?;
    (pe > ps && !is_placeholder(pw)).then_some((ps, pe))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> Option<&str> {
        let at = s.find("://")?;
        password(s.as_bytes(), at).map(|(a, b)| &s[a..b])
    }

    #[test]
    fn passwords_with_at_signs_and_any_length() {
        assert_eq!(pw("postgres://admin:p@ss@db:5432/app"), Some("p@ss"));
        let long = format!("https://u:{}@h/", "x1".repeat(300));
        assert_eq!(pw(&long).map(str::len), Some(600));
        assert_eq!(pw("https://github.com/org/repo"), None);
        assert_eq!(pw("ssh://git@github.com:org/repo.git"), None);
        assert_eq!(pw("https://u:${PASS}@h/"), None);
    }
}
