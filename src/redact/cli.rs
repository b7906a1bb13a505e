//! Passwords in command lines that no name announces: `mysql -pS3cret`, `sshpass -p S3cret`,
//! `curl -u user:S3cret`, `docker login -p S3cret`, `redis-cli -a S3cret`, `mongosh -p S3cret`,
//! `smbclient -U user%S3cret`, positional ones (`htpasswd -b file user S3cret`) and piped ones
//! (`echo S3cret | sudo -S …`). (`--password X` is a name and is handled by
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

/// A quoted argument at `s` (`'S3cret'`, `"S3cret"`, or `\"S3cret\"` in text that is still
/// JSON-encoded) to its closing quote on the same line, else the word at `s`: the password's
/// range without its quotes.
fn arg_at(b: &[u8], s: usize) -> (usize, usize) {
    let escaped = b.get(s) == Some(&b'\\') && b.get(s + 1) == Some(&b'"');
    let q = if escaped {
        Some(b'"')
    } else {
        b.get(s).copied().filter(|c| matches!(c, b'\'' | b'"'))
    };
    let Some(q) = q else {
        return (s, word_end(b, s));
    };
    let start = s + if escaped { 2 } else { 1 };
    let len = b[start..]
        .iter()
        .take(256)
        .take_while(|c| **c != q && **c != b'\n' && **c != b'\\')
        .count();
    // A backslash inside the quotes is an escape of this text or of a document around it:
    // where the argument ends is then unclear, and a guess could cut an escape in half.
    // Closed by its own quote: an argument that runs into a line break, a backslash or the
    // 256-byte cap has no certain end.
    let closed = if escaped {
        b.get(start + len..start + len + 2) == Some(b"\\\"")
    } else {
        b.get(start + len) == Some(&q)
    };
    if !closed {
        return (start, start);
    }
    (start, start + len)
}

/// Printable and free of backslashes: a word whose extent is certain.
fn plain(word: &[u8]) -> bool {
    word.iter().all(|c| *c >= 0x20 && *c != b'\\' && *c != 0x7f)
}

fn push(b: &[u8], (s, e): (usize, usize), rule: &'static str, out: &mut Vec<Hit>) {
    if e > s && !std::str::from_utf8(&b[s..e]).is_ok_and(super::value::is_placeholder) {
        out.push(Hit {
            start: s,
            end: e,
            rule: Rule::Builtin(rule),
        });
    }
}

pub(crate) fn scan(b: &[u8], out: &mut Vec<Hit>) {
    let mysql = has(b, b"mysql") || has(b, b"mariadb");
    let sshpass = has(b, b"sshpass");
    let docker = has(b, b"docker login") || has(b, b"podman login");
    let mongo = has(b, b"mongo");
    let sshpass_here = |p: usize| {
        command_before(b, p, b"sshpass").is_some_and(|c| {
            let between = &b[c..p];
            !has(between, b" ssh ") && !has(between, b" scp ") && !has(between, b" rsync ")
        })
    };
    for p in memchr::memmem::find_iter(b, b" -p") {
        let s = p + 3;
        let attached = b.get(s).is_some_and(|c| !c.is_ascii_whitespace() && *c != b'-');
        let spaced = b.get(s) == Some(&b' ');
        let (s, rule) = if mysql && attached {
            (s, "mysql-password-flag")
        } else if sshpass && (attached || spaced) && sshpass_here(p) {
            (s + usize::from(spaced), "sshpass-password-flag")
        } else if docker && spaced {
            (s + 1, "docker-login-password-flag")
        } else if mongo && spaced && command_before(b, p, b"mongo").is_some() {
            (s + 1, "mongo-password-flag")
        } else {
            continue;
        };
        push(b, arg_at(b, s), rule, out);
    }
    if has(b, b"redis-cli") {
        for p in memchr::memmem::find_iter(b, b" -a ") {
            push(b, arg_at(b, p + 4), "redis-cli-password-flag", out);
        }
    }
    if has(b, b"curl") {
        for flag in [&b" -u "[..], b" --user ", b" --user=", b" -u"] {
            for p in memchr::memmem::find_iter(b, flag) {
                // Quoted (`-u "$USER:pw"`): the user may be a variable, the password is after
                // the first colon.
                let (s, e) = arg_at(b, p + flag.len());
                if let Some(colon) = memchr::memchr(b':', &b[s..e]) {
                    push(b, (s + colon + 1, e), "curl-user-password", out);
                }
            }
        }
    }
    if has(b, b"smbclient") || has(b, b"rpcclient") {
        // `-U bob%pw`, the attached `-Ubob%pw`, and the long `--user=bob%pw` / `--user bob%pw`.
        for flag in [&b" -U"[..], b" --user=", b" --user"] {
            for p in memchr::memmem::find_iter(b, flag) {
                let at = p + flag.len();
                let (s, e) = arg_at(b, at + usize::from(b.get(at) == Some(&b' ')));
                if let Some(pc) = memchr::memchr(b'%', &b[s..e]) {
                    push(b, (s + pc + 1, e), "smbclient-user-password", out);
                }
            }
        }
    }
    for p in memchr::memmem::find_iter(b, b"htpasswd ") {
        if let Some(range) = htpasswd_password(b, p + 9) {
            push(b, range, "htpasswd-batch-password", out);
        }
    }
    for p in memchr::memmem::find_iter(b, b"sudo ") {
        if let Some(range) = sudo_stdin_password(b, p) {
            push(b, range, "sudo-stdin-password", out);
        }
    }
}

/// Where `cmd` starts when it is the command whose flags reach `p`: on the same line, at most
/// 256 bytes back, with no `|`, `;` or `&` between (another command's `-p` is a port).
fn command_before(b: &[u8], p: usize, cmd: &[u8]) -> Option<usize> {
    let from = p.saturating_sub(256);
    let c = from + memchr::memmem::rfind(&b[from..p], cmd)?;
    (!b[c..p].iter().any(|x| matches!(x, b'|' | b';' | b'&' | b'\n'))).then_some(c)
}

/// `htpasswd -b[c…] FILE USER PASSWORD` (or `-nb USER PASSWORD`): batch mode takes the
/// password as the last positional argument. At most a few words after the command are read.
fn htpasswd_password(b: &[u8], mut p: usize) -> Option<(usize, usize)> {
    let (mut batch, mut no_file) = (false, false);
    let mut positional = 0;
    for _ in 0..8 {
        while b.get(p) == Some(&b' ') {
            p += 1;
        }
        let (s, e) = arg_at(b, p);
        if e <= s {
            return None;
        }
        let word = &b[s..e];
        if !plain(word) {
            return None;
        }
        if word[0] == b'-' && s == p {
            batch |= word.contains(&b'b');
            no_file |= word.contains(&b'n');
        } else {
            positional += 1;
            if batch && positional == if no_file { 2 } else { 3 } {
                return Some((s, e));
            }
        }
        // Past the closing quote of a quoted argument.
        p = if s == p {
            e
        } else if b.get(e) == Some(&b'\\') {
            e + 2
        } else {
            e + 1
        };
    }
    None
}

/// `echo S3cret | sudo -S …` (or `printf '%s\n' S3cret |`, `sudo --stdin`, `sudo -kS`): the
/// argument piped into a sudo that reads its password from stdin, and `sudo -S … <<< S3cret`.
fn sudo_stdin_password(b: &[u8], sudo: usize) -> Option<(usize, usize)> {
    let line_end = sudo + b[sudo..].iter().take(512).take_while(|c| **c != b'\n').count();
    let flags = &b[sudo + 5..line_end];
    let stdin = flags.starts_with(b"--stdin")
        || (flags.first() == Some(&b'-')
            && flags.get(1) != Some(&b'-')
            && flags
                .iter()
                .take_while(|c| c.is_ascii_alphabetic() || **c == b'-')
                .any(|c| *c == b'S'));
    if !stdin {
        return None;
    }
    if let Some(h) = memchr::memmem::find(flags, b"<<< ") {
        let mut s = sudo + 5 + h + 4;
        while b.get(s) == Some(&b' ') {
            s += 1;
        }
        let (s, e) = arg_at(b, s);
        return plain(&b[s..e]).then_some((s, e));
    }
    // Back over blanks to the pipe, then the last argument before it.
    let mut q = sudo;
    while q > 0 && b[q - 1] == b' ' {
        q -= 1;
    }
    if q == 0 || b[q - 1] != b'|' || (q >= 2 && b[q - 2] == b'|') {
        return None;
    }
    q -= 1;
    while q > 0 && b[q - 1] == b' ' {
        q -= 1;
    }
    let from = q.saturating_sub(256);
    let line_start = memchr::memrchr(b'\n', &b[from..q]).map_or(from, |i| from + i + 1);
    let segment = &b[line_start..q];
    let cmd =
        memchr::memmem::rfind(segment, b"echo ").or_else(|| memchr::memmem::rfind(segment, b"printf "))?;
    let last = *segment.last()?;
    let (s, e) = if matches!(last, b'\'' | b'"') {
        let open = memchr::memrchr(last, &segment[..segment.len() - 1])?;
        let open = if last == b'"' && open > 0 && segment[open - 1] == b'\\' {
            open - 1
        } else {
            open
        };
        let (s, e) = arg_at(b, line_start + open);
        if e > s {
            (s, e.min(q))
        } else {
            // `echo -e "S3cret\n"`: escapes at the end of the quoted argument are not typed.
            let mut e = line_start + segment.len() - 1;
            let s = line_start + open + 1 + usize::from(segment[open] == b'\\');
            while e >= s + 2 && b[e - 2] == b'\\' && matches!(b[e - 1], b'n' | b'r' | b't') {
                e -= 2;
            }
            if last == b'"' && b[e - 1] == b'\\' {
                e -= 1;
            }
            (s, e)
        }
    } else {
        let start = segment.iter().rposition(|c| *c == b' ').map_or(0, |i| i + 1);
        (line_start + start, q)
    };
    // The argument must be the echo's own, not its flag or the command word.
    (s > line_start + cmd + 4 && !b[s..e].starts_with(b"-") && plain(&b[s..e])).then_some((s, e))
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

    #[test]
    fn positional_and_attached_passwords() {
        let found_one = |t: &str, want: &str| assert_eq!(found(t), vec![want], "{t}");
        found_one("sshpass -pS3cretPw ssh u@h", "S3cretPw");
        found_one("sshpass -p'S3cret Pw' ssh u@h", "S3cret Pw");
        found_one("echo S3cretPw | sudo -S apt-get install x", "S3cretPw");
        found_one("echo \"S3cretPw\" | sudo -S ls", "S3cretPw");
        found_one("echo -n 'S3cret Pw' |sudo -kS ls", "S3cret Pw");
        found_one("printf '%s\\n' S3cretPw | sudo --stdin id", "S3cretPw");
        found_one("sudo -S apt update <<< 'S3cretPw'", "S3cretPw");
        found_one("htpasswd -b /etc/nginx/.htpasswd admin S3cretPw", "S3cretPw");
        found_one("htpasswd -bcB .htpasswd admin 'S3cret Pw'", "S3cret Pw");
        found_one("htpasswd -nb admin S3cretPw", "S3cretPw");
        // An argument whose quote never closes ends the reading (found by a property soak).
        assert_eq!(found("htpasswd -b f \"u p password"), Vec::<&str>::new());
        found_one("redis-cli -h db -a S3cretPw ping", "S3cretPw");
        found_one("mongosh -u admin -p S3cretPw db", "S3cretPw");
        found_one("smbclient -U bob%S3cretPw //h/s", "S3cretPw");
        for kept in [
            "cat notes.txt | sudo -S tee /etc/x",
            "echo hi | sudo tee /etc/x",
            "echo $SUDO_PASS | sudo -S ls",
            "htpasswd -c .htpasswd admin",
            "htpasswd -B .htpasswd admin extra",
            "echo done || sudo -S ls",
            "smbclient -U bob //h/s",
            "redis-cli -h db ping",
            "sshpass -f pw.txt ssh -p 2222 host",
            "docker run -p 27017:27017 mongo",
            "mongosh db; docker run -p 8080:80 x",
        ] {
            assert_eq!(found(kept), Vec::<&str>::new(), "{kept}");
        }
    }
}
