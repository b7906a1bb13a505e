//! Is this value a secret? The precision half of named-value redaction: code, placeholders,
//! identifiers, types and UUIDs that sit after a secret-like name are not secrets.

use super::REDACTED;

/// How strongly a name says its value is secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Strength {
    /// `token`, `api_key`, `auth`, `AccountKey`: the value must also look random.
    Weak,
    /// `password`, `secret`, `pin`, `credentials`: any literal value is a secret.
    Strong,
}

/// Whether `value` (already cut to its extent) is a secret, given the name's strength and
/// whether it was written as a quoted literal.
pub(crate) fn is_secret(value: &str, strength: Strength, quoted: bool) -> bool {
    // A value with a marker in it (typed by someone, or left by an earlier pass): a quoted
    // strong value whose other words are all credential-like (`"Xk9#mQ2z [REDACTED] tail9Q"`)
    // is still a secret, and the scan redacts the words around the marker. The marker must sit
    // inside the value: at its edge, an earlier finding may have crossed where the value then
    // ended, and the words beyond were never part of it. Anything looser
    // would let a second pass find what the first judged as prose or code.
    if value.contains(REDACTED) {
        let mut words = value.split_whitespace().filter(|w| *w != REDACTED).peekable();
        let inside = !value.trim().starts_with(REDACTED) && !value.trim().ends_with(REDACTED);
        return strength == Strength::Strong
            && quoted
            && inside
            && words.peek().is_some()
            && words.all(credential_like);
    }
    let v = value.as_bytes();
    let has_alnum = v.iter().any(|b| b.is_ascii_alphanumeric() || !b.is_ascii());
    if v.is_empty() || !has_alnum || is_placeholder(value) {
        return false;
    }
    // Unquoted, these start code, not a literal: `&str`, `@Value(…)`, `*ptr`, `{a, b}`, `[x]`.
    if !quoted && matches!(v[0], b'&' | b'@' | b'*' | b'{' | b'(' | b'[') {
        return false;
    }
    let digits_only = v.iter().all(u8::is_ascii_digit);
    match strength {
        Strength::Strong => {
            if digits_only {
                return v.len() >= 3;
            }
            if v.len() < 3 || (!quoted && (is_code(value) || v.iter().all(u8::is_ascii_lowercase))) {
                return false;
            }
            // A quoted sentence is prose about a password, not one, unless a word of it is
            // credential-like (`"Xk9#mQ2z abc tail9Q"`) or it reads as a passphrase
            // (`"correct horse battery staple"`).
            let sentence = quoted && value.split(' ').filter(|w| !w.is_empty()).count() > 2;
            !sentence || value.split_whitespace().any(credential_like) || passphrase(value)
        }
        Strength::Weak => {
            // A constant's name is kept only here: under a strong name (`DB_PASSWORD=`) a
            // value written like one (`PROD_DB_PASS1`) is the password.
            if v.len() < 8
                || digits_only
                || is_code(value)
                || is_uuid(v)
                || v.contains(&b' ')
                || is_constant_name(v)
            {
                return false;
            }
            looks_random(v)
        }
    }
}

/// Three to eight plain lower-case words (digits allowed) with none of the words a message
/// about a password is made of: `correct horse battery staple`, not `must be 8 characters` or
/// `Enter your password`.
fn passphrase(value: &str) -> bool {
    const PROSE: &[&str] = &[
        "a",
        "an",
        "the",
        "and",
        "or",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "with",
        "by",
        "from",
        "is",
        "are",
        "was",
        "be",
        "been",
        "must",
        "should",
        "can",
        "will",
        "not",
        "no",
        "your",
        "you",
        "my",
        "our",
        "this",
        "that",
        "it",
        "its",
        "please",
        "enter",
        "type",
        "new",
        "old",
        "confirm",
        "current",
        "password",
        "passwords",
        "passphrase",
        "secret",
        "token",
        "key",
        "required",
        "characters",
        "chars",
        "least",
        "more",
        "than",
        "too",
        "short",
        "long",
        "invalid",
        "incorrect",
        "wrong",
        "match",
        "does",
        "do",
        "field",
        "here",
        "value",
        "if",
        "when",
        "use",
        "used",
        "set",
        "has",
        "have",
        "into",
        "as",
        "only",
        "all",
        "any",
    ];
    let words: Vec<&str> = value.split(' ').filter(|w| !w.is_empty()).collect();
    // Each word may be capitalised (`Correct Horse Battery Staple`) and may end in a symbol
    // (`staple!`); a sentence's words are recognised by the prose list, not by their case.
    (3..=8).contains(&words.len())
        && words.iter().all(|w| {
            let core = w.trim_end_matches(|c: char| c.is_ascii_punctuation());
            let b = core.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[1..]
                    .iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && !PROSE.contains(&core.to_ascii_lowercase().as_str())
        })
}

/// A word that looks like a credential rather than prose: six or more bytes with letters and
/// digits, and not code.
fn credential_like(w: &str) -> bool {
    w.len() >= 6
        && w.bytes().any(|c| c.is_ascii_digit())
        && w.bytes().any(|c| c.is_ascii_alphabetic())
        && !w.contains(REDACTED)
        && !is_code(w)
}

/// Clear placeholders only: `$X`, `${X}`, `$(cmd)`, `<X>`, `{{X}}`, `%X%`, `[X]`, `xxxx`,
/// `****`, `changeme`, `your-api-key`, `null`… A value that merely starts like one (`$3cr3t`,
/// `@dm1n`, `FakePassw0rd!`) is judged like any other: a real password may start with any byte.
pub(crate) fn is_placeholder(value: &str) -> bool {
    let v = value.as_bytes();
    let (first, last) = (v[0], v[v.len() - 1]);
    let wrapped = |open: u8, close: u8| first == open && last == close && v.len() >= 3;
    if variable(v)
        || wrapped(b'<', b'>')
        || wrapped(b'{', b'}')
        || wrapped(b'[', b']')
        || wrapped(b'(', b')')
        || wrapped(b'%', b'%')
        || value.starts_with("***")
        || value.starts_with("...")
        || value.starts_with('…')
    {
        return true;
    }
    if v.len() >= 3 && v.iter().all(|b| *b == first) {
        return true;
    }
    let lower = value.to_ascii_lowercase();
    if lower
        .bytes()
        .all(|b| b == b'x' || b == b'*' || b == b'-' || b == b'_' || b == b'.')
    {
        return true;
    }
    const WORDS: &[&str] = &[
        "changeme",
        "change_me",
        "change-me",
        "changeit",
        "password",
        "passwd",
        "secret",
        "token",
        "example",
        "placeholder",
        "redacted",
        "hidden",
        "masked",
        "none",
        "null",
        "nil",
        "undefined",
        "true",
        "false",
        "test",
        "dummy",
        "sample",
        "todo",
        "tbd",
        "required",
        "optional",
        "string",
        "empty",
        "foo",
        "bar",
        "foobar",
        "default",
        "unset",
        "notset",
        "not_set",
        "omitted",
        "removed",
        "api_key",
        "apikey",
        "your_password",
        "yourpassword",
        "mypassword",
        "pass",
        "pwd",
        "value",
    ];
    if WORDS.contains(&lower.as_str()) {
        return true;
    }
    // `your-api-key`, `YOUR_TOKEN_HERE`, `example_password`: words only. With a digit or a
    // symbol in it (`FakeT0ken!`, `example-9f8a7b6c`), the prefix proves nothing.
    let words_only = lower
        .bytes()
        .all(|b| b.is_ascii_lowercase() || matches!(b, b'_' | b'-' | b'.' | b' '));
    words_only
        && (lower.starts_with("your")
            || lower.ends_with("_here")
            || lower.ends_with("-here")
            || lower.starts_with("example")
            || lower.starts_with("dummy")
            || lower.starts_with("fake")
            || lower.starts_with("replace"))
        || lower.starts_with("env:")
        || lower.starts_with("vault:")
        || lower.starts_with("secret:")
        || lower.starts_with("op://")
}

/// A variable reference: `${X}`, `$(cmd)`, `$X` whose name reads as a variable's
/// (`$API_KEY`, `$dbPassword`, `$S3_KEY`), or such a name followed by an access
/// (`$config['db']`, `$env:TOKEN`, `$this->pw`). `$3cr3t` or `$ecr3tPa55!` is not one.
fn variable(v: &[u8]) -> bool {
    if v.len() < 2 || v[0] != b'$' {
        return false;
    }
    if v.len() >= 3 && matches!((v[1], v[v.len() - 1]), (b'{', b'}') | (b'(', b')')) {
        return true;
    }
    let name_len = v[1..]
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
        .count();
    let name = &v[1..1 + name_len];
    let rest = &v[1 + name_len..];
    let starts_ident = name
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_');
    let screaming = name
        .iter()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_');
    let wordy = !name.iter().any(u8::is_ascii_digit);
    let access = rest.is_empty() || matches!(rest[0], b'[' | b'{' | b'(' | b'.' | b':' | b'-');
    starts_ident && (screaming || wordy) && access
}

/// Source code rather than a literal: an identifier or dotted path without digits, a call, an
/// enum path, a type (`Option<String>`, `u8`, `&str`), an environment lookup.
pub(crate) fn is_code(value: &str) -> bool {
    let v = value.as_bytes();
    if value.contains("::") || value.contains("->") || value.contains("=>") || value.contains("()") {
        return true;
    }
    if (v.ends_with(b")") && v.contains(&b'(')) || v.ends_with(b"(") || v.ends_with(b"{") || v.ends_with(b"?")
    {
        return true;
    }
    // A call or a macro: `self.clean(&mut`, `Some(x`, `write!(f`, `Token![;]`.
    if let Some(open) = memchr::memchr3(b'(', b'[', b'!', v) {
        let head = &v[..open];
        let callee = !head.is_empty()
            && head
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'));
        if callee && (v[open] != b'!' || matches!(v.get(open + 1), Some(b'(' | b'[' | b'{'))) {
            return true;
        }
    }
    if value.contains("process.env")
        || value.contains("getenv")
        || value.contains("environ")
        || value.contains("ENV[")
    {
        return true;
    }
    // Generic types: `Option<String>`, `Vec<u8>`, `HashMap<K,V>`.
    if let Some(lt) = memchr::memchr(b'<', v) {
        if lt > 0
            && v[..lt]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
            && v.ends_with(b">")
        {
            return true;
        }
    }
    const TYPES: &[&str] = &[
        "u8", "u16", "u32", "u64", "u128", "i8", "i16", "i32", "i64", "i128", "f32", "f64", "usize", "isize",
        "int32", "int64", "uint32", "uint64", "float64", "byte", "[]byte",
    ];
    if TYPES.contains(&value) {
        return true;
    }
    // An identifier or a dotted path (`self.password`, `DEFAULT_TOKEN`, `config.db.pass`) with no
    // digit: a name, not a literal. Literal secrets almost always carry a digit or a symbol.
    let ident = v[0].is_ascii_alphabetic() || v[0] == b'_';
    ident
        && v.iter()
            .all(|b| b.is_ascii_alphabetic() || *b == b'_' || *b == b'.')
        && v.split(|b| matches!(b, b'_' | b'.'))
            .all(|p| p.is_empty() || is_word(p))
}

/// 8-4-4-4-12 hexadecimal.
pub(crate) fn is_uuid(v: &[u8]) -> bool {
    v.len() == 36
        && v.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// A constant's name, not a value: upper-case words joined by `_`, three or more
/// (`MAX_CONNECTIONS_PER_HOST`, `DEFAULT_SECRET_KEY2`). Generated secrets are not made of
/// words: groups of random letters (`XKQZ_MWPT_RVBN`) are no name (see [`vowelless_groups`]).
pub(crate) fn is_constant_name(v: &[u8]) -> bool {
    let mut parts = 0;
    for part in v.split(|c| *c == b'_') {
        let letters = part.iter().take_while(|c| c.is_ascii_uppercase()).count();
        if letters < 2 || !part[letters..].iter().all(u8::is_ascii_digit) {
            return false;
        }
        parts += 1;
    }
    parts >= 3 && vowelless_groups(v) < 2
}

/// The upper-case letter groups of three or more with no vowel in them (`XKQZ`, `HTTP`),
/// between `_`, `-` or `.`. One is an acronym (`MAX_HTTP_CONNECTIONS`); two or more are
/// groups of random letters, which words are not made of.
fn vowelless_groups(v: &[u8]) -> usize {
    v.split(|c| matches!(c, b'_' | b'-' | b'.'))
        .filter(|part| {
            let letters = part.iter().take_while(|c| c.is_ascii_uppercase()).count();
            letters >= 3
                && part[letters..].iter().all(u8::is_ascii_digit)
                && !part[..letters].iter().any(|c| b"AEIOUY".contains(c))
        })
        .count()
}

/// Made by a table, not a generator: runs of bytes in sequence (`ABCDEFGHIJ`, `0123456789`)
/// that make up most of the value (an alphabet constant), one of them ten long. Shorter runs
/// are left to the other tests (made-up values in examples, `Xy12345678`, `Zx9abcdef1`, are
/// still redacted), and so is a random value with a run in part of it
/// (`Xk9mQ2zP7w9rT4vBabcdefghijkl`).
pub(crate) fn has_sequence(v: &[u8]) -> bool {
    let (mut run, mut longest, mut covered) = (1, 1, 0);
    for i in 1..=v.len() {
        if i < v.len() && v[i] == v[i - 1].wrapping_add(1) {
            run += 1;
            continue;
        }
        longest = longest.max(run);
        if run >= 4 {
            covered += run;
        }
        run = 1;
    }
    longest >= 10 && covered * 4 >= v.len() * 3
}

/// Base64 of text (`dGhlIHNhbXBsZSBub25jZQ==` is `the sample nonce`, `Zm9vYmFy` is `foobar`):
/// a test vector or an encoded word, not a key. Decoded, it must be printable with a blank in
/// it, or lower-case letters only. Never `user:password` (HTTP Basic, whatever the password's
/// words) or JSON (a Docker auth config): those are credentials however readable.
pub(crate) fn encodes_text(v: &[u8]) -> bool {
    let body = v
        .strip_suffix(b"==")
        .or_else(|| v.strip_suffix(b"="))
        .unwrap_or(v);
    if body.len() < 8 || body.len() > 256 || (v.len() != body.len() && !v.len().is_multiple_of(4)) {
        return false;
    }
    let mut decoded = Vec::with_capacity(body.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for &c in body {
        let d = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return false,
        };
        acc = (acc << 6) | u32::from(d);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            decoded.push((acc >> bits) as u8);
        }
    }
    decoded.iter().all(|c| (0x20..0x7f).contains(c))
        && !decoded.contains(&b':')
        && !matches!(decoded.first(), Some(b'{' | b'['))
        && (decoded.contains(&b' ') || decoded.iter().all(u8::is_ascii_lowercase))
}

/// A credential rather than words: no run of word-like pieces (`my-cache-key`, `v1.2.3`,
/// `user:123:session`), and enough entropy.
fn looks_random(v: &[u8]) -> bool {
    // No text-keep here: after a secret's name, base64 of words is an encoded password
    // (`api_key=c3VwZXJzZWNyZXR2YWx1ZQ==`); only the nameless generic rule keeps it.
    if has_sequence(v) {
        return false;
    }
    let pieces = v.split(|b| matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'@'));
    let wordy = pieces
        .into_iter()
        .all(|p| p.len() <= 12 && (is_word(p) || p.iter().all(u8::is_ascii_digit) || (p.len() <= 4)));
    if wordy && vowelless_groups(v) < 2 {
        return false;
    }
    let classes = [
        v.iter().any(u8::is_ascii_lowercase),
        v.iter().any(u8::is_ascii_uppercase),
        v.iter().any(u8::is_ascii_digit),
    ]
    .iter()
    .filter(|c| **c)
    .count();
    classes >= 2 && entropy(v) >= 3.0
}

/// Letters only, cased like a word or an identifier (`cache`, `Key`, `myKey`, `HTTP`), not like
/// base64 (`eyJhbGciOi`).
fn is_word(p: &[u8]) -> bool {
    let upper = p.iter().filter(|b| b.is_ascii_uppercase()).count();
    p.iter().all(u8::is_ascii_alphabetic) && (upper <= 2 || upper == p.len())
}

/// Shannon entropy in bits per byte.
pub(crate) fn entropy(v: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for b in v {
        counts[*b as usize] += 1;
    }
    let n = v.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_code_are_not_secrets() {
        for v in [
            "$API_KEY",
            "${DB_PASSWORD}",
            "<your-token>",
            "{{ secrets.TOKEN }}",
            "%PASSWORD%",
            "xxxx",
            "********",
            "changeme",
            "YOUR_API_KEY_HERE",
            "null",
            "[REDACTED]",
        ] {
            assert!(is_placeholder(v), "{v}");
            assert!(!is_secret(v, Strength::Strong, true), "{v}");
        }
        for v in [
            "Option<String>",
            "String",
            "self.password",
            "Token::U8(52)",
            "get_password()",
            "u8",
            "os.getenv(\"X\")",
            "DEFAULT_TOKEN",
            "self.clean_child(&mut",
            "write!(f",
            "Token![;]",
            "Some(Token![",
        ] {
            assert!(is_code(v), "{v}");
            assert!(!is_secret(v, Strength::Strong, false), "{v}");
            assert!(!is_secret(v, Strength::Weak, false), "{v}");
        }
    }

    #[test]
    fn literals_next_to_strong_names_are_secrets() {
        for (v, quoted) in [
            ("hunter2", false),
            ("P#ssw0rd2024", false),
            ("123456", false),
            ("Hunter", true),
            ("s3cr3t", false),
        ] {
            assert!(is_secret(v, Strength::Strong, quoted), "{v}");
        }
        for (v, quoted) in [
            ("$3cr3tPa55", true),
            ("$ecr3tPa55!", true),
            ("@dm1nPass", true),
            ("FakePassw0rd!", true),
            ("example-9f8a7b6c5d", true),
            ("correct horse battery staple", true),
            ("Correct Horse Battery Staple", true),
            ("correct horse battery staple 42!", true),
            ("Purple monkey dishwasher 42", true),
        ] {
            assert!(is_secret(v, Strength::Strong, quoted), "{v}");
        }
        for v in [
            "Must be at least 8 characters",
            "Enter your password",
            "Reset Password Link",
            "Password must match!",
            "Please enter a value.",
            "$DB_PASSWORD",
            "$(cat /run/secrets/db)",
            "$config['db']",
        ] {
            assert!(!is_secret(v, Strength::Strong, true), "{v}");
        }
        assert!(!is_secret("please", Strength::Strong, false));
        assert!(!is_secret("12", Strength::Strong, false));
    }

    #[test]
    fn encoded_text_constants_and_alphabets_are_not_random() {
        assert!(encodes_text(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(encodes_text(b"Zm9vYmFy"));
        assert!(
            !encodes_text(b"dXNlcjpwYXNzd29yZDEyMw=="),
            "user:password123 is a credential"
        );
        assert!(!encodes_text(b"q8ZtR3nV7mK2pL9xW4bC6dF1"));
        assert!(
            !encodes_text(b"Ym9iOmNvcnJlY3QgaG9yc2UgYmF0dGVyeSBzdGFwbGU="),
            "bob:correct horse battery staple"
        );
        assert!(!encodes_text(b"eyJhdXRocyI6IHt9fQ=="), "{{\"auths\": {{}}}}");
        assert!(is_constant_name(b"MAX_CONNECTIONS_PER_HOST"));
        assert!(is_constant_name(b"DEFAULT_SECRET_KEY2"));
        assert!(!is_constant_name(b"DB_PASSWORD"));
        assert!(!is_constant_name(b"Q8ZT_R3NV_7MK2"));
        assert!(!is_constant_name(b"XKQZ_MWPT_RVBN_LQ42"));
        assert!(is_secret("PROD_DB_PASS1", Strength::Strong, false));
        assert!(!is_secret("MAX_CONNECTIONS_PER_HOST", Strength::Weak, false));
        assert!(!is_secret("MAX_HTTP_CONNECTIONS", Strength::Weak, false));
        assert!(is_secret("XKQZ_MWPT_RVBN_LQ42", Strength::Weak, false));
        assert!(has_sequence(b"xABCDEFGHIJKLMNOPx"));
        assert!(!has_sequence(b"Xy12345678"));
        assert!(!has_sequence(b"Xk9mQ2zP7w9rT4vBabcdefghijkl"));
        assert!(has_sequence(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        ));
    }

    #[test]
    fn weak_names_need_random_values() {
        for v in ["AbC123xyzQ", "9f8e7d6c5b4a3f2e", "dXNlcjpwYXNzd29yZA=="] {
            assert!(is_secret(v, Strength::Weak, false), "{v}");
        }
        for v in [
            "4096",
            "my-cache-key",
            "v1.2.3",
            "123e4567-e89b-12d3-a456-426614174000",
            "bearer",
            "user:123:session",
            "abc123",
        ] {
            assert!(!is_secret(v, Strength::Weak, true), "{v}");
        }
    }
}
