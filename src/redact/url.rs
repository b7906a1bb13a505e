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
    let Some(at_sign) = memchr::memrchr(b'@', authority) else {
        return slashed_password(b, start, len);
    };
    let colon = memchr::memchr(b':', &authority[..at_sign])?;
    let (ps, pe) = (start + colon + 1, start + at_sign);
    let pw = std::str::from_utf8(&b[ps..pe]).ok()?;
    (pe > ps && !is_placeholder(pw)).then_some((ps, pe))
}

/// A password holding `/` (a base64 cloud key, `https://AKIA…:wJalr/K7…@host`) ends the
/// authority early at its first `/`; the userinfo then ends at an `@` further on, before any
/// blank, quote, `?`, `#` or the next URL. Only when the user part has no `/` and what follows
/// its colon is no port (`host:8443/docs/a@b` stays).
fn slashed_password(b: &[u8], start: usize, slash: usize) -> Option<(usize, usize)> {
    let colon = memchr::memchr(b':', &b[start..start + slash])?;
    // An empty user is Redis's usual form (`redis://:pw@cache:6379`).
    if b.get(start + slash) != Some(&b'/')
        || (colon + 1 < slash && b[start + colon + 1..start + slash].iter().all(u8::is_ascii_digit))
    {
        return None;
    }
    let rest = &b[start + slash..];
    // Up to the next URL first: each `://` is looked at from its own start, so a line of URLs
    // back to back costs one pass, not 4 KiB per URL.
    let window = &rest[..rest.len().min(4096)];
    let next_url = memchr::memmem::find(window, b"://").unwrap_or(window.len());
    let len = window[..next_url]
        .iter()
        .take_while(|c| {
            !matches!(
                c,
                b'?' | b'#' | b' ' | b'\t' | b'\n' | b'\r' | b'"' | b'\'' | b'`' | b'<' | b'>' | b'\\'
            )
        })
        .count();
    let run = &rest[..len];
    let at_sign = memchr::memrchr(b'@', run)?;
    let host_ok = run.get(at_sign + 1).is_some_and(u8::is_ascii_alphanumeric);
    let (ps, pe) = (start + colon + 1, start + slash + at_sign);
    let pw = std::str::from_utf8(&b[ps..pe]).ok()?;
    (host_ok && !is_placeholder(pw)).then_some((ps, pe))
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
        assert_eq!(
            pw("s3://AKIAQ3EGUMZ5EXAMPLE2:wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ8kLmN0pQ@bucket/x"),
            Some("wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ8kLmN0pQ")
        );
        assert_eq!(pw("https://bob:pa/ss@host"), Some("pa/ss"));
        // A key that starts with `/`: nothing between the colon and the slash is no port.
        assert_eq!(pw("https://bob:/x6vx+qk/t8c@host/r"), Some("/x6vx+qk/t8c"));
        assert_eq!(pw("https://host:8443/docs/a@b"), None);
        assert_eq!(pw("https://github.com/user@example.com"), None);
        assert_eq!(pw("https://a.io:x/y https://b:c@d"), None);
        assert_eq!(pw("redis://:ab/cd+ef12@cache:6379/0"), Some("ab/cd+ef12"));
        assert_eq!(pw("https://:8443/docs/a@b"), None);
    }
}
