//! Passwords in command lines that no name announces: `mysql -pS3cret`, `sshpass -p S3cret`,
//! `curl -u user:S3cret`, `docker login -p S3cret`. (`--password X` is a name and is handled by
//! the named scanner.)

use super::scan::{Hit, Rule};

/// Where the word at `s` ends: at a blank, a quote, or a JSON escape other than `\\` (text one
/// level down in a JSON document shows its quotes and line breaks as `\"` and `\n`; a
/// password never holds those, and taking the backslash alone would cut the escape in half).
fn word_end(b: &[u8], s: usize) -> usize {
    let mut e = s;
    while let Some(&c) = b.get(e) {
        let escape =
            c == b'\\' && matches!(b.get(e + 1), Some(b'"' | b'n' | b'r' | b't' | b'u' | b'b' | b'f'));
        if c.is_ascii_whitespace() || matches!(c, b'"' | b'\'' | b'`') || escape {
            break;
        }
        e += 1 + usize::from(c == b'\\' && b.get(e + 1) == Some(&b'\\'));
    }
    e.min(b.len())
}

fn has(b: &[u8], word: &[u8]) -> bool {
    memchr::memmem::find(b, word).is_some()
}

pub(crate) fn scan(b: &[u8], out: &mut Vec<Hit>) {
    let mysql = has(b, b"mysql") || has(b, b"mariadb");
    let sshpass = has(b, b"sshpass");
    let docker = has(b, b"docker login") || has(b, b"podman login");
    for p in memchr::memmem::find_iter(b, b" -p") {
        let s = p + 3;
        let attached = b.get(s).is_some_and(|c| !c.is_ascii_whitespace() && *c != b'-');
        let (s, rule) = if mysql && attached {
            (s, "mysql-password-flag")
        } else if sshpass && b.get(s) == Some(&b' ') {
            (s + 1, "sshpass-password-flag")
        } else if docker && b.get(s) == Some(&b' ') {
            (s + 1, "docker-login-password-flag")
        } else {
            continue;
        };
        let e = word_end(b, s);
        if e > s && !std::str::from_utf8(&b[s..e]).is_ok_and(super::value::is_placeholder) {
            out.push(Hit {
                start: s,
                end: e,
                rule: Rule::Builtin(rule),
            });
        }
    }
    if has(b, b"curl") {
        for flag in [&b" -u "[..], b" --user ", b" --user=", b" -u"] {
            for p in memchr::memmem::find_iter(b, flag) {
                let s = p + flag.len();
                let e = word_end(b, s);
                if let Some(colon) = memchr::memchr(b':', &b[s..e]) {
                    if s + colon + 1 < e {
                        out.push(Hit {
                            start: s + colon + 1,
                            end: e,
                            rule: Rule::Builtin("curl-user-password"),
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<&str> {
        let mut hits = Vec::new();
        scan(text.as_bytes(), &mut hits);
        hits.iter().map(|h| &text[h.start..h.end]).collect()
    }

    #[test]
    fn a_flag_value_ends_at_a_json_escape_but_keeps_an_escaped_backslash() {
        assert_eq!(found(r#"mysql -pS3cret\"\n"#), vec!["S3cret"]);
        assert_eq!(found(r#"mysql -pS3cret\nnext"#), vec!["S3cret"]);
        assert_eq!(found(r#"mysql -pS3\\cret rest"#), vec![r"S3\\cret"]);
        assert_eq!(found(r#"mysql -p\"\n\"x"#), Vec::<&str>::new());
        assert_eq!(found("sshpass -p S3cret ssh h"), vec!["S3cret"]);
        assert_eq!(found("mysql -pS3cret"), vec!["S3cret"]);
    }
}
