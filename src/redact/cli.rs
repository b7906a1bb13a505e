//! Passwords in command lines that no name announces: `mysql -pS3cret`, `sshpass -p S3cret`,
//! `curl -u user:S3cret`, `docker login -p S3cret`. (`--password X` is a name and is handled by
//! the named scanner.)

use super::scan::{Hit, Rule};

fn word_end(b: &[u8], s: usize) -> usize {
    s + b[s..]
        .iter()
        .take_while(|c| !c.is_ascii_whitespace() && !matches!(c, b'"' | b'\'' | b'`'))
        .count()
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
