//! Values next to secret-like names, in every common assignment syntax:
//! `NAME=v`, `name: v`, `:=`, `::=`, `?=`, `=>`, `.=`, `+=`, any spaces around the separator,
//! quoted names and values (`"password": "…"`, `'token' => '…'`), `setProperty("X", "…")`,
//! XML elements (`<password>…</password>`), typed declarations (`var pw string = "…"`,
//! `password: &str = "…"`), CLI flags (`--password X`, `--token=X`), netrc lines
//! (`machine h login u password p`) and auth headers (`Authorization: Bearer …`).
//!
//! Linear: each name is looked at once, a value is at most [`MAX_VALUE`] bytes, and a name that
//! sits inside an already redacted value is skipped.

use super::engine::{engine, Target};
use super::scan::{Hit, Rule};
use super::value::{is_secret, Strength};
use super::view::gutter;

/// Longest name or value considered (a longer run is cut there).
const MAX_NAME: usize = 128;
pub(crate) const MAX_VALUE: usize = 4096;

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// Words that, as a part of a name, make its value a secret whatever it looks like.
const STRONG: &[&str] = &[
    "password",
    // An expect script's prompt pattern (`expect "assword:"`), cut to match `Password` too.
    "assword",
    "passwd",
    "pwd",
    "pass",
    "passphrase",
    "passcode",
    "pin",
    "secret",
    "secrets",
    "credential",
    "credentials",
    "creds",
    "privatekey",
    "secretkey",
    "clientsecret",
];
/// Words that make a random-looking value a secret.
const WEAK: &[&str] = &[
    "token",
    "key",
    "apikey",
    "accesskey",
    "authkey",
    "auth",
    "authorization",
    "authtoken",
    "accesstoken",
    "apitoken",
    "bearer",
    "cookie",
    "sig",
    "signature",
    "jwt",
    "sas",
    "accountkey",
    "connectionstring",
    "dsn",
];
/// A last part that makes the name describe something about the secret, not hold it.
const NOT_VALUE: &[&str] = &[
    "count",
    "counts",
    "type",
    "types",
    "kind",
    "len",
    "length",
    "size",
    "limit",
    "limits",
    "max",
    "min",
    "id",
    "ids",
    "name",
    "names",
    "file",
    "filename",
    "files",
    "path",
    "paths",
    "dir",
    "url",
    "uri",
    "urls",
    "endpoint",
    "host",
    "env",
    "var",
    "field",
    "fields",
    "header",
    "headers",
    "prefix",
    "suffix",
    "format",
    "ttl",
    "expiry",
    "expires",
    "expiration",
    "at",
    "index",
    "idx",
    "usage",
    "budget",
    "policy",
    "rotation",
    "label",
    "mode",
    "enabled",
    "required",
    "regex",
    "pattern",
    "rule",
    "rules",
    "prompt",
    "hint",
    "placeholder",
    "error",
    "errors",
    "lifetime",
    "timeout",
    "version",
    "provider",
    "manager",
    "helper",
    "command",
    "cmd",
    "location",
    "source",
    "strategy",
    "algorithm",
    "algo",
    "reset",
    "changed",
    "updated",
    "created",
    "position",
    "pos",
    "start",
    "end",
    "offset",
    "validator",
    "validation",
    "form",
    "input",
    "dialog",
    "button",
    "icon",
    "view",
    "page",
    "handler",
    "callback",
    "func",
    "function",
    "method",
    "service",
    "client",
    "config",
    "cfg",
    "options",
    "opts",
    "settings",
    "schema",
    "model",
    "flag",
    "flags",
    "number",
    "num",
    "total",
    "tokens",
    "keys",
    "hash",
    "strength",
    "complexity",
    "storage",
    "store",
    "manager",
    "length",
    "bytes",
    "bits",
    "exists",
    "set",
    "missing",
    "valid",
    "invalid",
    "ref",
    "refs",
    "template",
    "file_path",
];
/// Parts right before `key` or `token` (or after it) that make them data-structure words, not
/// credentials. Words that also name real credentials (`primary` of Azure's `primaryMasterKey`,
/// `search`, `input` of `INPUT_TOKEN`, `ssh`, `gpg`, `pgp`, `signing`, `s3`) are not here: their
/// values must also look random, which keeps `primary_key: Option<String>` as it is.
const BENIGN_QUALIFIERS: &[&str] = &[
    "cache",
    "sort",
    "foreign",
    "partition",
    "map",
    "hash",
    "lookup",
    "object",
    "dict",
    "row",
    "column",
    "col",
    "group",
    "unique",
    "composite",
    "public",
    "pub",
    "react",
    "list",
    "item",
    "node",
    "shortcut",
    "hot",
    "keyboard",
    "press",
    "event",
    "route",
    "i18n",
    "translation",
    "message",
    "msg",
    "registry",
    "idempotency",
    "dedup",
    "query",
    "element",
    "prop",
    "bucket",
    "next",
    "continuation",
    "cursor",
    "pagination",
    "sync",
    "cancellation",
    "cancel",
    "lexer",
    "parser",
    "parse",
    "completion",
    "special",
    "bos",
    "eos",
    "pad",
    "unk",
    "sep",
    "cls",
    "mask",
    "eof",
    "stop",
    "output",
    "prompt",
    "cached",
    "reasoning",
    "total",
    "max",
    "min",
    "host",
    "known",
    "foreign",
    "object",
    "file",
    "api_version",
    "max_new",
];

/// Splits `userPassword`, `DB_PASS`, `X-Api-Key`, `spring.datasource.password` into lower-case
/// parts.
fn parts(name: &str) -> Vec<String> {
    let b = name.as_bytes();
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    for (i, &c) in b.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let prev = if i > 0 { b[i - 1] } else { 0 };
        let next = b.get(i + 1).copied().unwrap_or(0);
        let boundary = c.is_ascii_uppercase()
            && (prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next.is_ascii_lowercase()));
        if boundary && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(c.to_ascii_lowercase() as char);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// How strongly `name` says its value is a secret (`None`: it does not).
///
/// Transcripts repeat the same few names on every line (`outputTokens`, `toolCallId`), and
/// judging one splits and lower-cases it into fresh strings (about a tenth of redaction's time
/// was spent here): answers for short names are kept per thread, at most [`CACHED_NAMES`].
pub(crate) fn classify(name: &str) -> Option<Strength> {
    if name.len() > 64 {
        return judge_name(name);
    }
    CLASSIFIED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(known) = cache.get(name) {
            return *known;
        }
        let judged = judge_name(name);
        if cache.len() >= CACHED_NAMES {
            cache.clear();
        }
        cache.insert(name.into(), judged);
        judged
    })
}

/// How many names' answers a thread keeps (a few hundred KB at most).
const CACHED_NAMES: usize = 4096;

thread_local! {
    static CLASSIFIED: std::cell::RefCell<std::collections::HashMap<Box<str>, Option<Strength>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn judge_name(name: &str) -> Option<Strength> {
    let name = name.trim_start_matches('-');
    let lower = name.to_ascii_lowercase();
    // `$PWD` is the working directory.
    if lower == "pwd" || lower == "oldpwd" {
        return None;
    }
    let parts = parts(name);
    let last = parts.last()?;
    // A session id is the session's credential (`sessionid=`, `JSESSIONID`, `PHPSESSID`); its
    // value must still look random (a UUID or a counter stays).
    let compact_name: String = lower.chars().filter(char::is_ascii_alphanumeric).collect();
    if compact_name.ends_with("sessionid") || compact_name.ends_with("sessid") || last == "session" {
        return Some(Strength::Weak);
    }
    // `dbpassword`, `clientsecret`, `authtoken`: compounds written without separators.
    let compact: String = lower.chars().filter(char::is_ascii_alphanumeric).collect();
    if NOT_VALUE.contains(&last.as_str()) {
        return None;
    }
    // A bare `pass` glued to another word is as often `bypass` or `compass`; these glued forms
    // are the names tools read passwords from (`SSHPASS` for `sshpass -e`).
    let glued_pass = [
        "sshpass",
        "dbpass",
        "rootpass",
        "adminpass",
        "userpass",
        "mysqlpass",
    ]
    .iter()
    .any(|w| compact.ends_with(w));
    let strong = parts.iter().any(|p| STRONG.contains(&p.as_str()))
        || ["password", "passwd", "passphrase"]
            .iter()
            .any(|w| lower.contains(w))
        || compact.ends_with("secret")
        || glued_pass;
    if strong {
        return Some(Strength::Strong);
    }
    let weak_part = parts.iter().position(|p| WEAK.contains(&p.as_str()));
    let weak = weak_part.is_some()
        || ["token", "apikey", "accesskey", "authkey"]
            .iter()
            .any(|w| compact.ends_with(w));
    if !weak {
        return None;
    }
    // A qualifier counts only right before the secret word or after it: `cache_key`,
    // `next_token`, `token_list`, but not `ROW_API_KEY`-style names where another word sits
    // between.
    let benign = |p: &String| BENIGN_QUALIFIERS.contains(&p.as_str());
    let qualified = match parts.iter().rposition(|p| WEAK.contains(&p.as_str())) {
        Some(w) => (w > 0 && benign(&parts[w - 1])) || parts[w + 1..].iter().any(benign),
        None => parts.iter().any(benign),
    };
    if qualified {
        return None;
    }
    Some(Strength::Weak)
}

/// A value's extent in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Value {
    pub start: usize,
    pub end: usize,
    pub quoted: bool,
    /// Announced loosely (a table cell, `the password is …`): the value must also look like a
    /// credential, as words around such names are mostly prose.
    pub loose: bool,
    /// The password of a `(user, password)` pair (`auth=("bob", "…")`): a secret whatever the
    /// name's strength.
    pub password: bool,
}

/// Finds secret values after names in `text`. `hits` are the keyword occurrences (sorted by
/// start) whose targets are names or vendor words.
pub(crate) fn scan(text: &str, hits: &[(usize, usize, Target)], out: &mut Vec<Hit>) {
    let b = text.as_bytes();
    let e = engine();
    let mut done_until = 0; // end of the last name looked at, or of the last value redacted
    let mut i = 0;
    while i < hits.len() {
        let (hs, he, _) = hits[i];
        i += 1;
        if hs < done_until {
            continue;
        }
        let (ns, ne) = name_around(b, hs, he);
        done_until = ne;
        let name = &text[ns..ne];
        // Vendor words inside this name.
        let mut vendors: Vec<u16> = Vec::new();
        for &(s, _, t) in &hits[i - 1..] {
            if s >= ne {
                break;
            }
            if let Target::Vendor(v) = t {
                vendors.push(v);
            }
        }
        let strength = classify(name);
        if strength.is_none() && vendors.is_empty() {
            continue;
        }
        let Some(value) = value_after(b, ns, ne) else {
            continue;
        };
        let v = &text[value.start..value.end];
        let strength = if value.password {
            Some(Strength::Strong)
        } else {
            strength
        };
        let rule = vendors
            .iter()
            .find(|&&k| e.vendors[k as usize].is_match(v))
            .map(|&k| Rule::Builtin(super::catalogue::VENDORS[k as usize].id))
            .or_else(|| {
                strength
                    .filter(|s| is_secret(v, *s, value.quoted))
                    .filter(|_| !value.loose || credential_looking(v))
                    .map(|_| Rule::Builtin("secret-named-value"))
            });
        if let Some(rule) = rule {
            let end = past_cap(b, value);
            out.push(Hit {
                start: value.start,
                end,
                rule,
            });
            done_until = end;
        }
    }
}

/// The real end of a secret value that was read only up to [`MAX_VALUE`] bytes: the rest of
/// the value leaks otherwise (a 5 KB password, a PEM in base64). The cap keeps judging names
/// linear; a value judged a secret is then followed by a plain scan of its alphabet (to its
/// closing quote, or to a blank, quote or escape), and the names inside it are skipped, so the
/// whole stays linear.
fn past_cap(b: &[u8], value: Value) -> usize {
    if value.end - value.start < MAX_VALUE {
        return value.end;
    }
    let rest = &b[value.end..];
    let len = if value.quoted {
        // The opening quote sits right before the value, or before an auth scheme (`"Bearer …`).
        let from = value.start.saturating_sub(16);
        let quote = b[from..value.start]
            .iter()
            .rev()
            .copied()
            .find(|c| is_quote(*c))
            .unwrap_or(b'"');
        let mut k = 0;
        while k < rest.len() && rest[k] != b'\n' && rest[k] != quote {
            k += if rest[k] == b'\\' { 2 } else { 1 };
        }
        k.min(rest.len())
    } else {
        rest.iter()
            .take_while(|c| !c.is_ascii_whitespace() && !is_quote(**c) && **c != b'\\' && **c != b'<')
            .count()
    };
    value.end + len
}

/// What a loosely announced value must look like: six or more bytes with a digit in them
/// (`hunter2-x`, `Tr0ub4dor&3`, `482913`); not a word (`incorrect`), not code.
fn credential_looking(v: &str) -> bool {
    v.len() >= 6 && v.bytes().any(|c| c.is_ascii_digit()) && !super::value::is_code(v)
}

/// The whole name around a keyword occurrence `[s, e)`.
fn name_around(b: &[u8], s: usize, e: usize) -> (usize, usize) {
    let mut ns = s;
    while ns > 0 && s - ns < MAX_NAME && is_name_byte(b[ns - 1]) {
        ns -= 1;
    }
    let mut ne = e;
    while ne < b.len() && ne - e < MAX_NAME && is_name_byte(b[ne]) {
        ne += 1;
    }
    // A sentence's full stop or a trailing dash is not part of the name.
    while ne > e && matches!(b[ne - 1], b'.' | b'-') {
        ne -= 1;
    }
    while ns < s && b[ns] == b'.' {
        ns += 1;
    }
    // `x--password`: a flag glued to a previous word starts at its dashes.
    if let Some(d) = memchr::memmem::rfind(&b[ns..s], b"--") {
        ns += d;
    }
    (ns, ne)
}

fn skip_blanks(b: &[u8], mut p: usize) -> usize {
    let start = p;
    while p < b.len() && p - start < 64 && matches!(b[p], b' ' | b'\t') {
        p += 1;
    }
    p
}

fn is_quote(c: u8) -> bool {
    matches!(c, b'"' | b'\'' | b'`')
}

/// The value assigned to the name at `[ns, ne)`, if the text after it is an assignment.
pub(crate) fn value_after(b: &[u8], ns: usize, ne: usize) -> Option<Value> {
    let before = if ns > 0 { b[ns - 1] } else { b'\n' };
    let mut p = ne;
    let quoted_name = is_quote(before);
    let name_closed = quoted_name && b.get(ne) == Some(&before);
    if quoted_name && b.get(p) == Some(&before) {
        p += 1;
    }
    // XML element: `<password>value</password>`.
    if before == b'<' && b.get(p) == Some(&b'>') {
        let start = p + 1;
        let len = b[start..]
            .iter()
            .take(MAX_VALUE)
            .take_while(|c| !matches!(c, b'<' | b'\n' | b'"'))
            .count();
        return Some(Value {
            start,
            end: start + len,
            quoted: true,
            loose: false,
            password: false,
        })
        .filter(|v| v.end > v.start);
    }
    // .NET config: `<add key="Password" value="…"/>`: the name is an attribute's value.
    if quoted_name && ns >= 5 && b[..ns - 1].ends_with(b"=") && b[ns - 5..ns - 2].eq_ignore_ascii_case(b"key")
    {
        let q = skip_blanks(b, p);
        if b.len() >= q + 6 && b[q..q + 6].eq_ignore_ascii_case(b"value=") {
            return read_value(b, q + 6);
        }
    }
    if let Some(q) = expect_send(b, ns, ne) {
        let mut value = read_value(b, q)?;
        // The script's `\r` / `\n` that ends the line typed is not part of the password.
        while value.end >= value.start + 2
            && b[value.end - 2] == b'\\'
            && matches!(b[value.end - 1], b'r' | b'n')
        {
            value.end -= 2;
        }
        return (value.end > value.start).then_some(value);
    }
    if quoted_name && b.get(p) == Some(&b']') {
        p += 1; // `ENV["password"] = …`
    }
    let after_name = p;
    p = skip_blanks(b, p);
    let blanks = p > after_name;
    let sep = separator(b, p);
    let mut loose = false;
    p = match sep {
        Some(len) => p + len,
        None if table_cell(b, ns, p) || prose_is(b, p, blanks && !quoted_name).is_some() => {
            loose = true;
            if b[p] == b'|' {
                p + 1
            } else {
                prose_is(b, p, true)?
            }
        }
        None if !quoted_name && b.get(p) == Some(&b'(') && is_auth_name(&b[ns..ne]) => {
            // `HTTPBasicAuth("bob", "…")`, `BasicAuth('bob', '…')`.
            return auth_pair(b, p);
        }
        None => {
            let flag = b[ns] == b'-' && b.get(ns + 1) == Some(&b'-');
            let call = quoted_name && b.get(p) == Some(&b',') && preceded_by_paren(b, ns - 1);
            let netrc = blanks && !quoted_name && is_netrc_password(b, ns, ne);
            if call {
                p + 1
            } else if let Some(q) = sibling_value(b, ns, ne, quoted_name) {
                q
            } else if (flag || netrc) && blanks {
                p
            } else if blanks && !quoted_name {
                // `var password string = "…"`: a type between the name and `=`.
                typed_assignment(b, p)?
            } else {
                return None;
            }
        }
    };
    let colon = sep == Some(1) && b.get(p - 1) == Some(&b':');
    p = skip_blanks(b, p);
    // `password: &str = "…"` / `token: string = '…'`: skip the annotation.
    if colon {
        if let Some(q) = typed_assignment(b, p) {
            p = skip_blanks(b, q);
        }
        p = skip_yaml_anchor(b, ns, p);
        p = skip_yaml_tag(b, ns, p);
        if let Some(value) = next_line_value(b, ns, ne, p) {
            return Some(value);
        }
    }
    if matches!(b.get(p), Some(b'(' | b'[')) && is_auth_name(&b[ns..ne]) {
        // `auth=("bob", "…")` (requests, httpx), `auth: ['bob', '…']`.
        return auth_pair(b, p);
    }
    let encoded = matches!(sep, Some(3 | 5)) && b[p - sep.unwrap_or(0)] == b'%';
    if encoded {
        // `password%3D%22…%22`: an encoded quote opens the value; encoded_end stops at the
        // closing one.
        if let Some(q) = encoded_quote(&b[p..]) {
            p += q;
        }
    }
    p = skip_scheme(b, p);
    let mut value = if encoded {
        // Read only to the encoded value's end: read past it, each `token%3D` of a long
        // encoded query would read the whole rest (up to the cap) again.
        read_value(&b[..encoded_end(b, p, sep == Some(5))], p)?
    } else {
        read_value(b, p)?
    };
    value.loose = loose;
    if encoded && !value.quoted {
        // An encoded placeholder: `%24TOKEN` (`$TOKEN`), `%7B…` (`{…}`), `%3C…` (`<…>`).
        let v = &b[value.start..value.end];
        if [&b"%24"[..], b"%7b", b"%3c"]
            .iter()
            .any(|p| v.len() >= 3 && v[..3].eq_ignore_ascii_case(p))
        {
            return None;
        }
        // An encoded mask: `%2A%2A%2A%2A` (`****`).
        if v.len() >= 3 && v.chunks(3).all(|c| c.eq_ignore_ascii_case(b"%2a")) {
            return None;
        }
    }
    if colon && !value.quoted && super::k8s::is_block_indicator(&b[value.start..value.end]) {
        // A block scalar's header (`>2-`) whose lines were not found: no value of its own.
        return None;
    }
    if colon && !value.quoted && !loose {
        yaml_words(b, ns, ne, &mut value);
    }
    if quoted_name
        && !name_closed
        && sep.is_some()
        && !value.quoted
        && !first_word_is_secret(b, ns, ne, &value)
    {
        // `["DB_PASSWORD=hunter 2x"]`: the whole assignment is one string, and the value runs
        // to that string's closing quote, blanks and all. Not when its first word is a secret
        // by itself: then the string is a command (`sh -c "API_TOKEN=Xk9m… ./deploy.sh"`),
        // whose words after the value must be kept and must not dilute the value's judgment.
        if let Some(close) = closing_quote(b, value.end, before) {
            value.end = close;
            value.quoted = true;
        }
    }
    if loose && !value.quoted {
        // `|password|hunter2-x|`: the cell ends at its bar.
        if let Some(bar) = memchr::memchr(b'|', &b[value.start..value.end]) {
            value.end = value.start + bar;
        }
    }
    (value.end > value.start).then_some(value)
}

/// The end of a URL-encoded value starting at `p`: its first encoded `&`, `=`, blank or quote
/// (`%26`, `%3D`, `%20`, `%22`, `%27`; encoded once or twice: `%2526`), a real blank, quote or
/// `<`, or the cap; a quoted value is read as usual. An encoded `=` ends it too: base64
/// padding (`%3D%3D`) is no part of a password worth the risk of reading the next pair. An
/// encoded `;` (`%3B`) does not: it is a character of the password, not a separator of queries.
fn encoded_end(b: &[u8], p: usize, twice: bool) -> usize {
    if b.get(p).is_some_and(|c| is_quote(*c)) {
        return b.len();
    }
    let ends = |k: usize| {
        matches!(
            (b.get(k + 1), b.get(k + 2)),
            (Some(b'2'), Some(b'6' | b'0' | b'2' | b'7')) | (Some(b'3'), Some(b'D' | b'd'))
        )
    };
    let mut k = p;
    while k < b.len() && k - p < MAX_VALUE {
        match b[k] {
            b' ' | b'\t' | b'\n' | b'\r' | b'"' | b'\'' | b'`' | b'<' => break,
            // Behind a single `%3D`, `%2526` is the value's own `&`, encoded with the rest of
            // a redirect: only a value whose separator was encoded twice ends there.
            b'%' if ends(k)
                || (twice && b.get(k + 1) == Some(&b'2') && b.get(k + 2) == Some(&b'5') && ends(k + 2)) =>
            {
                break
            }
            _ => k += 1,
        }
    }
    k
}

/// The length of an encoded quote (`%22`, `%27`, or `%2522` encoded twice) that `rest` starts
/// with.
fn encoded_quote(rest: &[u8]) -> Option<usize> {
    [&b"%22"[..], b"%27", b"%2522", b"%2527"]
        .iter()
        .find(|q| rest.starts_with(q))
        .map(|q| q.len())
}

/// `&pw ` before a YAML value (an anchor, which names the value for `*pw` elsewhere): where
/// the value starts.
fn skip_yaml_anchor(b: &[u8], ns: usize, p: usize) -> usize {
    if b.get(p) != Some(&b'&') || key_indent(b, ns).is_none() {
        return p;
    }
    let len = b[p + 1..]
        .iter()
        .take(64)
        .take_while(|c| is_name_byte(**c))
        .count();
    // Rust's `&dyn T`, `&mut T`, `&impl T` are references, not anchors.
    let rust = matches!(&b[p + 1..p + 1 + len], b"dyn" | b"mut" | b"impl");
    if len > 0 && !rust && matches!(b.get(p + 1 + len), Some(b' ' | b'\t')) {
        skip_blanks(b, p + 1 + len)
    } else {
        p
    }
}

/// A YAML tag before the value (`password: !!str …`): where the value starts. Core tags
/// (`!!str`, `!!binary`) and verbatim ones (`!<tag:yaml.org,2002:str>`) only say the type of the
/// value behind them. A local tag usually names what the value is looked up by (CloudFormation's
/// `!Ref DbPassword`, Home Assistant's `!secret wifi_password`), so it is skipped only before a
/// block scalar, whose lines are the value (`password: !vault |`). A tag with nothing behind it
/// on its line is left where it is: then it is the value (a password may start with `!`).
fn skip_yaml_tag(b: &[u8], ns: usize, p: usize) -> usize {
    if b.get(p) != Some(&b'!') || key_indent(b, ns).is_none() {
        return p;
    }
    let len = b[p..]
        .iter()
        .take(128)
        .take_while(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        .count();
    let (tag, after) = (&b[p..p + len], skip_blanks(b, p + len));
    if after == p + len || matches!(b.get(after), None | Some(b'\n' | b'\r' | b'#')) {
        return p;
    }
    let core = (tag.len() > 2 && tag.starts_with(b"!!") && tag[2..].iter().all(u8::is_ascii_alphanumeric))
        || (tag.starts_with(b"!<") && tag.ends_with(b">"));
    let local_before_block =
        matches!(b.get(after), Some(b'|' | b'>')) && tag[1..].iter().all(|c| is_name_byte(*c) || *c == b'!');
    if core || local_before_block {
        after
    } else {
        p
    }
}

/// Past a block scalar's header (`|`, `>`, with a chomping `-`/`+` and an indentation digit in
/// either order, then blanks and a comment): where its line ends. `p` is just past the `|`/`>`.
fn block_header_end(b: &[u8], mut p: usize) -> usize {
    for _ in 0..2 {
        if matches!(b.get(p), Some(b'-' | b'+' | b'1'..=b'9')) {
            p += 1;
        }
    }
    p = skip_blanks(b, p);
    if b.get(p) == Some(&b'#') && p > 0 && matches!(b[p - 1], b' ' | b'\t') {
        // memchr: this runs for every such name on a line, and a line of them must stay fast.
        let rest = &b[p..(p + MAX_VALUE).min(b.len())];
        p += memchr::memchr2(b'\n', b'\r', rest).unwrap_or(rest.len());
    }
    p
}

/// The key at `ns` is first on its line: only blanks or a list's `-` between it and the line's
/// start or a viewer's gutter (`12. `, `   3   │ `, `cat -n`'s tab). Its indentation (the bytes
/// between gutter and key) and the gutter's length, or `None`. The look-back is bounded (256 bytes): a key deeper than
/// that is not first on its line, and an unbounded search would be quadratic on a long line.
fn key_indent(b: &[u8], ns: usize) -> Option<(usize, usize)> {
    let from = ns.saturating_sub(256);
    let line_start = match memchr::memrchr(b'\n', &b[from..ns]) {
        Some(i) => from + i + 1,
        None if from == 0 => 0,
        None => return None,
    };
    let content = (line_start + gutter(&b[line_start..ns])).min(ns);
    let before = &b[content..ns];
    before
        .iter()
        .all(|c| matches!(c, b' ' | b'\t' | b'-'))
        .then_some((content - line_start, before.len()))
}

/// A YAML value on the line after its key (`password:` or `password: >-`, then the value
/// indented deeper on the next line): that line's scalar when it looks like a credential, or
/// its words when they make a passphrase; under a strong name, every line of a block scalar
/// (`|` / `>`). The key must be first on its line (behind a viewer's gutter too, then each next
/// line is read behind its own); a next line that is a key, a list item or a comment is no
/// value (`password:` left empty above `port: 5432`).
fn next_line_value(b: &[u8], ns: usize, ne: usize, mut p: usize) -> Option<Value> {
    let block = matches!(b.get(p), Some(b'|' | b'>'));
    if block {
        p = block_header_end(b, p + 1);
    }
    p += usize::from(b.get(p) == Some(&b'\r'));
    if b.get(p) != Some(&b'\n') {
        return None;
    }
    let (guttered, key_indent) = key_indent(b, ns)?;
    let line_end = |s: usize| {
        s + b[s..]
            .iter()
            .take(MAX_VALUE)
            .take_while(|c| !matches!(c, b'\n' | b'\r'))
            .count()
    };
    // Where the line at `q` has its content, and how deep it is indented behind its gutter.
    let content = |q: usize| {
        let g = if guttered > 0 {
            gutter(&b[q..line_end(q)])
        } else {
            0
        };
        let indent = b[q + g..]
            .iter()
            .take(256)
            .take_while(|c| matches!(c, b' ' | b'\t'))
            .count();
        (q + g + indent, indent)
    };
    // Up to two blank lines may stand between the key and its value.
    let mut first = p + 1;
    for _ in 0..2 {
        let (start, _) = content(first);
        let end = line_end(start);
        let next = end + usize::from(b.get(end) == Some(&b'\r'));
        if end != start || b.get(next) != Some(&b'\n') {
            break;
        }
        first = next + 1;
    }
    let (start, indent) = content(first);
    if indent <= key_indent {
        return None;
    }
    let line = &b[start..line_end(start)];
    let structural = matches!(line.first(), None | Some(b'-' | b'#' | b'&' | b'*' | b'{' | b'['));
    if structural || line.ends_with(b":") || memchr::memmem::find(line, b": ").is_some() {
        return None;
    }
    let strong = std::str::from_utf8(&b[ns..ne]).is_ok_and(|n| classify(n) == Some(Strength::Strong));
    let value = read_value(b, start)?;
    let text = std::str::from_utf8(&b[value.start..value.end]).ok()?;
    if strong && block && (credential_looking(text) || is_secret(text, Strength::Strong, false)) {
        // Every line of the block scalar: those indented at least as deep as its first.
        let mut end = start + line.len();
        while end - start < MAX_VALUE {
            let q = end + usize::from(b.get(end) == Some(&b'\r'));
            if b.get(q) != Some(&b'\n') {
                break;
            }
            let (next, deep) = content(q + 1);
            let next_end = line_end(next);
            if deep < indent || next_end == next {
                break;
            }
            end = next_end;
        }
        return Some(Value {
            start,
            end,
            quoted: true,
            loose: false,
            password: true,
        });
    }
    if strong {
        if let Some(len) = phrase_len(line).filter(|&len| !names_itself(&line[..len], &b[ns..ne])) {
            return Some(Value {
                start,
                end: start + len,
                quoted: false,
                loose: false,
                password: true,
            });
        }
    }
    credential_looking(text).then_some(value)
}

/// A phrase that says its key's own word (`secret:` / `Kubernetes secret holding keys`)
/// describes the value rather than being it.
fn names_itself(phrase: &[u8], name: &[u8]) -> bool {
    let words = |t: &[u8]| -> Vec<String> {
        t.split(|c| !c.is_ascii_alphanumeric())
            .filter(|w| w.len() > 2)
            .map(|w| String::from_utf8_lossy(w).to_ascii_lowercase())
            .collect()
    };
    let phrase = words(phrase);
    words(name).iter().any(|n| phrase.contains(n))
}

/// The value as read up to its first blank is a secret under the name at `[ns, ne)`.
fn first_word_is_secret(b: &[u8], ns: usize, ne: usize, value: &Value) -> bool {
    let (Ok(name), Ok(word)) = (
        std::str::from_utf8(&b[ns..ne]),
        std::str::from_utf8(&b[value.start..value.end]),
    ) else {
        return false;
    };
    classify(name).is_some_and(|s| is_secret(word, s, false))
}

/// `passphrase: my secret words` first on a YAML line: an unquoted scalar runs to the line's
/// end (or a ` #` comment), blanks and all. Words that a message or a description is made of
/// (`must be at least 12 characters`, `the user's password`) leave the value as read (its first
/// word, which the strength rules then judge); otherwise the words are the password.
fn yaml_words(b: &[u8], ns: usize, ne: usize, value: &mut Value) {
    // key_indent's look-back is bounded: unbounded, a line of `password: x ` repeated would
    // search back to the line's start from every name (quadratic).
    let first = key_indent(b, ns).is_some();
    let strong = std::str::from_utf8(&b[ns..ne]).is_ok_and(|n| classify(n) == Some(Strength::Strong));
    if !strong || !first || !b.get(value.start).is_some_and(u8::is_ascii_alphanumeric) {
        return;
    }
    if let Some(len) = phrase_len(&b[value.start..]) {
        value.end = value.start + len;
        value.password = true;
    }
}

/// The length of the passphrase that `rest` starts with: 2 to 8 plain words to the line's end
/// (or a ` #` comment) that make no message and no note.
fn phrase_len(rest: &[u8]) -> Option<usize> {
    const MESSAGE: &[&str] = &[
        "a",
        "an",
        "the",
        "is",
        "are",
        "be",
        "must",
        "should",
        "can",
        "will",
        "not",
        "to",
        "of",
        "for",
        "in",
        "on",
        "with",
        "if",
        "when",
        "at",
        "least",
        "enter",
        "your",
        "please",
        "required",
        "characters",
        "invalid",
        "see",
        "use",
        "used",
        "from",
        "and",
        "or",
        "this",
        "that",
        "set",
        "by",
        "as",
    ];
    // Notes left where a password goes (`password: TODO fix later`, `via env`, `ask Bob`): a
    // note starts with one, or is made of them only. Anywhere else they are words of a
    // passphrase (`correct horse env staple`, `welcome here`).
    const NOTE: &[&str] = &[
        "todo", "fixme", "tbd", "later", "via", "ask", "vault", "env", "here",
    ];
    let len = rest
        .iter()
        .take(256)
        .take_while(|c| !matches!(c, b'\n' | b'\r' | b'\\'))
        .count();
    let mut line = &rest[..len];
    if let Some(c) = memchr::memmem::find(line, b" #") {
        line = &line[..c];
    }
    let line = line.trim_ascii_end();
    let words: Vec<&[u8]> = line.split(|c| *c == b' ').filter(|w| !w.is_empty()).collect();
    let plain = line
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b' ' | b'-' | b'_' | b'.' | b'!' | b'\'' | b'?'));
    let is_in = |list: &[&str], w: &[u8]| {
        let w = String::from_utf8_lossy(w).to_ascii_lowercase();
        list.contains(&w.trim_end_matches(|c: char| c.is_ascii_punctuation()))
    };
    let note = words.first().is_some_and(|w| is_in(NOTE, w)) || words.iter().all(|w| is_in(NOTE, w));
    let message = note || words.iter().any(|w| is_in(MESSAGE, w));
    ((2..=8).contains(&words.len()) && plain && !message).then_some(line.len())
}

/// The quote `q` that closes a string at or after `p`, on the same line and within
/// [`MAX_VALUE`] bytes; `\q` closes it too (text one JSON level down), any other escape
/// leaves the end unclear.
fn closing_quote(b: &[u8], p: usize, q: u8) -> Option<usize> {
    let len = b[p..]
        .iter()
        .take(MAX_VALUE)
        .take_while(|c| **c != q && **c != b'\n' && **c != b'\\')
        .count();
    match b.get(p + len) {
        Some(c) if *c == q => Some(p + len),
        Some(b'\\') if b.get(p + len + 1) == Some(&q) => Some(p + len),
        _ => None,
    }
}

/// `auth`, `basic_auth`, `HTTPBasicAuth`, `DigestAuth`: a name whose value may be a
/// (user, password) pair.
fn is_auth_name(name: &[u8]) -> bool {
    name.len() >= 4 && name[name.len() - 4..].eq_ignore_ascii_case(b"auth")
}

/// A `(user, password)` pair at `p` (an opening `(` or `[`): two quoted literals and a comma
/// between them; the second one.
fn auth_pair(b: &[u8], p: usize) -> Option<Value> {
    let q = skip_blanks(b, p + 1);
    if !b.get(q).is_some_and(|c| is_quote(*c)) {
        return None;
    }
    let user = read_value(b, q).filter(|v| v.quoted && v.end < b.len())?;
    let r = skip_blanks(b, user.end + 1);
    if b.get(r) != Some(&b',') {
        return None;
    }
    let s = skip_blanks(b, r + 1);
    if !b.get(s).is_some_and(|c| is_quote(*c)) {
        return None;
    }
    let mut pw = read_value(b, s).filter(|v| v.quoted)?;
    pw.password = true;
    Some(pw)
}

/// A name that is the value of a `name` / `key` member, with a sibling `value` member right
/// after it (k8s and ECS env, HAR headers, `- name: X\n  value: v` in YAML): the position after
/// the sibling's `:`.
fn sibling_value(b: &[u8], ns: usize, ne: usize, quoted_name: bool) -> Option<usize> {
    // Before the name: `"name":` / `name:` / `key =`.
    let q = skip_blanks_back(b, if quoted_name { ns - 1 } else { ns });
    if q == 0 || !matches!(b[q - 1], b':' | b'=') {
        return None;
    }
    let mut r = skip_blanks_back(b, q - 1);
    if r > 0 && is_quote(b[r - 1]) {
        r -= 1;
    }
    let word_start = r - b[..r]
        .iter()
        .rev()
        .take(5)
        .take_while(|c| c.is_ascii_alphabetic())
        .count();
    let word = &b[word_start..r];
    if !(word.eq_ignore_ascii_case(b"name") || word.eq_ignore_ascii_case(b"key")) {
        return None;
    }
    // After it: a `,` or a line break, then `value` as the next member.
    let mut p = ne;
    if quoted_name {
        if b.get(p) != Some(&b[ns - 1]) {
            return None;
        }
        p += 1;
    }
    p = skip_blanks(b, p);
    match b.get(p) {
        Some(b',' | b'\n') => p += 1,
        Some(b'\r') if b.get(p + 1) == Some(&b'\n') => p += 2,
        _ => return None,
    }
    let from = p;
    while p < b.len() && p - from < 64 && b[p].is_ascii_whitespace() {
        p += 1;
    }
    let quote = b.get(p).copied().filter(|c| is_quote(*c));
    p += usize::from(quote.is_some());
    if !(b.len() >= p + 5 && b[p..p + 5].eq_ignore_ascii_case(b"value")) {
        return None;
    }
    p += 5;
    if let Some(quote) = quote {
        if b.get(p) != Some(&quote) {
            return None;
        }
        p += 1;
    }
    p = skip_blanks(b, p);
    matches!(b.get(p), Some(b':' | b'=')).then_some(p + 1)
}

/// An expect script's password prompt (`expect "password:"` then `send "…\r"`, on the next
/// line, a line or two further, or in a `{ send … }` block): the position of the string sent.
fn expect_send(b: &[u8], ns: usize, ne: usize) -> Option<usize> {
    let from = ns.saturating_sub(48);
    let line_start = memchr::memrchr(b'\n', &b[from..ns]).map_or(from, |i| from + i + 1);
    let in_line = memchr::memmem::find(&b[line_start..ns], b"expect ").is_some();
    // A pattern line of a braced block (`expect {` on a line above, the prompt alone first
    // on its line).
    let in_block = || {
        b[line_start..ns]
            .iter()
            .all(|c| matches!(c, b' ' | b'\t' | b'"' | b'\''))
            && memchr::memmem::rfind(&b[line_start.saturating_sub(256)..line_start], b"expect {").is_some()
    };
    if !in_line && !in_block() {
        return None;
    }
    // The rest of the prompt string, then its closing quote (Tcl strings use `"`; scripts
    // written inline in shell quote the prompt with `'`).
    let close = ne + memchr::memchr2(b'"', b'\'', &b[ne..(ne + 32).min(b.len())])?;
    if memchr::memchr(b'\n', &b[ne..close]).is_some() {
        return None;
    }
    let mut p = close + 1;
    // Up to two lines between prompt and answer (`sleep 1`, a comment), each read at most
    // 128 bytes far; another `expect` means the answer is not this prompt's.
    let mut between = 0;
    loop {
        let start = p;
        while p < b.len() && p - start < 64 && (b[p].is_ascii_whitespace() || matches!(b[p], b'{' | b';')) {
            p += 1;
        }
        if b[p..].starts_with(b"send ") {
            break;
        }
        if between == 2 || b[p..].starts_with(b"expect") {
            return None;
        }
        between += 1;
        p += memchr::memchr(b'\n', &b[p..(p + 128).min(b.len())])?;
    }
    p = skip_blanks(b, p + 5);
    if b[p..].starts_with(b"-- ") {
        p = skip_blanks(b, p + 3);
    }
    Some(p)
}

/// A name alone in a table cell, `| password | hunter2-x |`: `p` is at the cell's closing `|`.
fn table_cell(b: &[u8], ns: usize, p: usize) -> bool {
    b.get(p) == Some(&b'|') && {
        let q = skip_blanks_back(b, ns);
        q > 0 && b[q - 1] == b'|'
    }
}

/// `is ` / `was ` after a name and a blank (`the password is Tr0ub4dor&3`): where the value
/// starts.
fn prose_is(b: &[u8], p: usize, after_blank: bool) -> Option<usize> {
    if !after_blank {
        return None;
    }
    for word in [&b"is "[..], b"was ", b"is: "] {
        if b.len() > p + word.len() && b[p..p + word.len()].eq_ignore_ascii_case(word) {
            return Some(skip_blanks(b, p + word.len()));
        }
    }
    None
}

fn skip_blanks_back(b: &[u8], p: usize) -> usize {
    let mut q = p;
    while q > 0 && matches!(b[q - 1], b' ' | b'\t') {
        q -= 1;
    }
    q
}

/// Length of an assignment separator at `p`: `=`, `:`, `:=`, `::=`, `?=`, `=>`, `.=`, `+=`,
/// `||=`. Comparisons (`==`, `!=`), paths (`::`) and URLs (`://`) are not.
fn separator(b: &[u8], p: usize) -> Option<usize> {
    let at = |k: usize| b.get(p + k).copied().unwrap_or(0);
    match (at(0), at(1), at(2)) {
        (b':', b':', b'=') => Some(3),
        (b'|', b'|', b'=') => Some(3),
        (b':', b'=', _) | (b'?', b'=', _) | (b'.', b'=', _) | (b'+', b'=', _) => Some(2),
        (b'=', b'>', _) => Some(2),
        (b'=', b'=', _) => None,
        (b'=', _, _) => Some(1),
        (b':', b':', _) => None,
        (b':', b'/', b'/') => None,
        (b':', _, _) => Some(1),
        // URL-encoded `=` (`token%3D…` in an encoded query or redirect), or encoded twice
        // (`%253D`, a query inside an encoded redirect inside a query).
        (b'%', b'3', b'D' | b'd') => Some(3),
        (b'%', b'2', b'5') if matches!((at(3), at(4)), (b'3', b'D' | b'd')) => Some(5),
        _ => None,
    }
}

fn preceded_by_paren(b: &[u8], quote: usize) -> bool {
    let q = skip_blanks_back(b, quote);
    q > 0 && b[q - 1] == b'('
}

/// `password` as a netrc keyword: the text before it on its line has `machine` or `login`.
fn is_netrc_password(b: &[u8], ns: usize, ne: usize) -> bool {
    let name = &b[ns..ne];
    if !(name.eq_ignore_ascii_case(b"password") || name.eq_ignore_ascii_case(b"passwd")) {
        return false;
    }
    let from = ns.saturating_sub(300);
    let line_start = memchr::memrchr(b'\n', &b[from..ns]).map_or(from, |i| from + i + 1);
    let before = &b[line_start..ns];
    if memchr::memmem::find(before, b"login").is_some() || memchr::memmem::find(before, b"machine").is_some()
    {
        return true;
    }
    before.iter().all(|c| matches!(c, b' ' | b'\t')) && netrc_lines_before(&b[from..line_start])
}

/// `password` alone at the start of a line: the lines right above it are a netrc entry's
/// (`machine api.example.com` / `login bob` / `default`), with nothing else between.
fn netrc_lines_before(above: &[u8]) -> bool {
    let mut lines = above.strip_suffix(b"\n").unwrap_or(above).rsplit(|c| *c == b'\n');
    for line in lines.by_ref().take(3) {
        let words: Vec<&[u8]> = line
            .split(|c| c.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .collect();
        match words.as_slice() {
            [b"login" | b"account", _] => continue,
            [b"default"] | [b"default", b"login", _] => return true,
            // A host, not `machine learning`.
            [b"machine", host] => return host.contains(&b'.') || host.eq_ignore_ascii_case(b"localhost"),
            [b"machine", _, b"login", _] => return true,
            _ => return false,
        }
    }
    false
}

/// After a type (`string`, `&str`, `[]byte`, `Option<String>`), blanks and a single `=`: the
/// position after `=`.
fn typed_assignment(b: &[u8], p: usize) -> Option<usize> {
    let len = b[p..]
        .iter()
        .take(48)
        .take_while(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, b'_' | b'&' | b'*' | b'[' | b']' | b'<' | b'>' | b'.' | b'\'')
        })
        .count();
    let first = *b.get(p)?;
    let starts_type =
        first.is_ascii_alphabetic() || matches!(first, b'&' | b'*') || b[p..].starts_with(b"[]");
    if len == 0 || !starts_type {
        return None;
    }
    let q = skip_blanks(b, p + len);
    if b.get(q) != Some(&b'=') || b.get(q + 1) == Some(&b'=') {
        return None;
    }
    // Nothing assigned after the `=`: the "type" was a base64 value with one `=` of padding
    // (`password: c3VwZXJzZWNyZXQ=`).
    let r = skip_blanks(b, q + 1);
    let assigned = b
        .get(r)
        .is_some_and(|c| !matches!(c, b'\n' | b'\r' | b',' | b';' | b'}' | b']' | b')' | b'\\'));
    assigned.then_some(q + 1)
}

/// Skips an auth scheme word (`Bearer `, `Basic `, `token `): the secret follows it.
fn skip_scheme(b: &[u8], p: usize) -> usize {
    let q = usize::from(b.get(p).is_some_and(|c| is_quote(*c)));
    for scheme in [
        &b"bearer "[..],
        b"basic ",
        b"token ",
        b"digest ",
        b"bot ",
        b"apikey ",
    ] {
        if b.len() >= p + q + scheme.len() && b[p + q..p + q + scheme.len()].eq_ignore_ascii_case(scheme) {
            return if q == 1 { p } else { p + scheme.len() };
        }
    }
    p
}

/// A quoted value to its closing quote (escaped quotes inside), or an unquoted one to its
/// natural end.
fn read_value(b: &[u8], p: usize) -> Option<Value> {
    let q = *b.get(p)?;
    if is_quote(q) {
        let start = p + 1;
        let mut k = start;
        // After an auth scheme inside the quotes: `"Bearer abc"`.
        let p2 = skip_scheme(b, start);
        while k < b.len() && k - start < MAX_VALUE {
            match b[k] {
                b'\\' => k += 2,
                b'\n' => break,
                c if c == q => {
                    return Some(Value {
                        start: p2,
                        end: k,
                        quoted: true,
                        loose: false,
                        password: false,
                    })
                    .filter(|v| v.end > v.start);
                }
                _ => k += 1,
            }
        }
        // No closing quote on this line: the value runs to the line's end (a cut-off literal
        // still leaks, and a redaction that removed the closing quote then finds its own marker
        // inside, which keeps redaction idempotent).
        let end = start
            + b[start..]
                .iter()
                .take(MAX_VALUE)
                .take_while(|c| **c != b'\n')
                .count();
        return Some(Value {
            start: p2,
            end,
            quoted: true,
            loose: false,
            password: false,
        })
        .filter(|v| v.end > v.start);
    }
    unquoted(b, p)
}

fn unquoted(b: &[u8], start: usize) -> Option<Value> {
    // A list separator right after the separator: the value is empty (`password=,user=x`).
    if matches!(b.get(start), Some(b',' | b';' | b'&')) {
        return None;
    }
    let mut k = start;
    let mut depth = 0i32;
    while k < b.len() && k - start < MAX_VALUE {
        let c = b[k];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'"' | b'\'' | b'`' | b'<' => break,
            b'\\' if matches!(b.get(k + 1), Some(b'"' | b'n' | b't' | b'r' | b'\\' | b'u')) => break,
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            // A list or query separator when another `name=` or a blank follows; else part of
            // the value (`P#ss;w,rd&1`).
            b',' | b';' | b'&' if next_is_field(b, k + 1) => break,
            _ => {}
        }
        k += 1;
    }
    let mut end = k;
    while end > start && matches!(b[end - 1], b'.' | b',' | b';' | b':') {
        end -= 1;
    }
    (end > start).then_some(Value {
        start,
        end,
        quoted: false,
        loose: false,
        password: false,
    })
}

/// After a `,`, `;` or `&`: end of text, a blank, or `name=` / `name:`.
fn next_is_field(b: &[u8], p: usize) -> bool {
    match b.get(p) {
        None => true,
        Some(c) if c.is_ascii_whitespace() => true,
        Some(_) => {
            let len = b[p..].iter().take(64).take_while(|c| is_name_byte(**c)).count();
            len > 0 && matches!(b.get(p + len), Some(b'=' | b':'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified_by_their_parts() {
        for n in [
            "password",
            "DB_PASS",
            "MYSQL_PWD",
            "userPassword",
            "client_secret",
            "pin",
            "--password",
            "PASSWORD_PROD",
        ] {
            assert_eq!(classify(n), Some(Strength::Strong), "{n}");
        }
        for n in [
            "api_key",
            "ENCRYPTION_KEY",
            "AccountKey",
            "X-Api-Key",
            "GITHUB_TOKEN",
            "authToken",
            "Authorization",
            "primaryMasterKey",
            "primaryReadonlyMasterKey",
            "PRIMARY_KEY",
            "SEARCH_API_KEY",
            "SSH_KEY",
            "INPUT_TOKEN",
            "S3_ACCESS_KEY",
            "SIGNING_KEY",
        ] {
            assert_eq!(classify(n), Some(Strength::Weak), "{n}");
        }
        for n in [
            "PWD",
            "token_count",
            "outputTokens",
            "max_tokens",
            "password_file",
            "cache_key",
            "keyboard",
            "sort_key",
            "row_cache_key",
            "next_token",
            "secret_name",
            "author",
            "tokenizer",
            "spinner",
        ] {
            assert_eq!(classify(n), None, "{n}");
        }
    }

    fn value(text: &str, name: &str) -> Option<String> {
        let ns = text.find(name).unwrap();
        value_after(text.as_bytes(), ns, ns + name.len()).map(|v| text[v.start..v.end].to_string())
    }

    #[test]
    fn every_assignment_syntax_yields_the_value() {
        let cases = [
            ("DB_PASSWORD=P#ssw0rd2024", "DB_PASSWORD", "P#ssw0rd2024"),
            ("password      =      abc;def", "password", "abc;def"),
            ("password := \"x\\\"y\"", "password", "x\\\"y"),
            ("PASSWORD ::= s3cret", "PASSWORD", "s3cret"),
            ("PASSWORD ?= s3cret", "PASSWORD", "s3cret"),
            ("'password' => 'pw1'", "password", "pw1"),
            ("$password .= 'pw1'", "password", "pw1"),
            ("props.setProperty(\"password\", \"pw1\")", "password", "pw1"),
            ("<password>pw1</password>", "password", "pw1"),
            ("var password string = \"pw1\"", "password", "pw1"),
            ("let password: &str = \"pw1\";", "password", "pw1"),
            ("mysql --password s3cret -h db", "--password", "s3cret"),
            ("machine h login u password s3cret", "password", "s3cret"),
            ("Authorization: Bearer abc.def", "Authorization", "abc.def"),
            ("Password=Pa55word;Encrypt=true", "Password", "Pa55word"),
            ("?access_token=AbCd1234&x=1", "access_token", "AbCd1234"),
            ("password:\n next", "password", ""),
        ];
        for (text, name, want) in cases {
            let got = value(text, name).unwrap_or_default();
            assert_eq!(got, want, "{text}");
        }
        assert_eq!(
            value("password: c3VwZXJzZWNyZXQ=", "password").as_deref(),
            Some("c3VwZXJzZWNyZXQ=")
        );
        assert_eq!(
            value(
                r#"{"name":"Authorization","value":"Basic dXNlcjpwYXNzd29yZDEyMw=="}"#,
                "Authorization"
            )
            .as_deref(),
            Some("dXNlcjpwYXNzd29yZDEyMw==")
        );
        assert_eq!(
            value("- name: DB_PASSWORD\n  value: Tr0ub4dor3", "DB_PASSWORD").as_deref(),
            Some("Tr0ub4dor3")
        );
        assert_eq!(value("Token::U8(52)", "Token"), None);
        assert_eq!(value("if password == x", "password"), None);
    }
}
