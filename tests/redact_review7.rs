//! Leaks and over-redaction found by an independent attack on redaction (round 7), as named
//! cases: each secret must be gone in plain text and inside a JSON line of tool output alike,
//! and each look-alike that is no secret must come through unchanged.

#[path = "common/redaction.rs"]
mod redaction;
use redaction::{assert_gone, assert_kept, content, in_json, redact};

const PW: &str = "S3cretPw9x";
const TOKEN: &str = "q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE";

#[test]
fn url_encoded_tokens_and_passwords_in_queries() {
    for (case, text, secret, keep) in [
        (
            "token%3D in a query",
            format!("GET https://api.example.com/cb?state=token%3D{TOKEN}%26user%3Dbob"),
            TOKEN,
            "user%3Dbob",
        ),
        (
            "password%3D in an encoded redirect",
            format!("https://x.io/login?next=%2Fhome%3Fpassword%3D{PW}%26lang%3Den"),
            PW,
            "lang%3Den",
        ),
        (
            "password%3D at the end",
            format!("curl 'https://x.io/api?data=user%3Dbob%26password%3D{PW}'"),
            PW,
            "user%3Dbob",
        ),
        (
            "lower-case %3d and a form body",
            format!("body: grant_type=password&username=bob&client_secret%3d{TOKEN}"),
            TOKEN,
            "username=bob",
        ),
        (
            "access_token%3D",
            format!("Location: https://app.io/#state%3Daccess_token%3D{TOKEN}%26expires_in%3D3600"),
            TOKEN,
            "expires_in%3D3600",
        ),
    ] {
        assert_gone(case, &text, secret, keep);
    }
    for kept in [
        "GET /api?token%3D%24TOKEN%26x%3D1",
        "https://x.io/cb?state%3Dtoken%3Dshort%26x%3D1",
    ] {
        assert_kept(kept);
    }
}

/// Guards existing behaviour (main already passes it; no fix behind it): a quoted command's
/// one-word secret is redacted alone, and its words after the value are kept.
#[test]
fn a_one_word_secret_in_a_quoted_assignment_takes_only_its_word() {
    for text in [
        format!("\"DB_PASSWORD={PW} more words\""),
        format!("sh -c \"DB_PASSWORD={PW} more words\""),
        format!("[\"DB_PASSWORD={PW} more words\"]"),
    ] {
        for out in [redact(&text), content(&redact(&in_json(&text)))] {
            assert!(!out.contains(PW), "{text:?} -> {out:?}");
            assert!(out.contains(" more words"), "over-redacted: {text:?} -> {out:?}");
        }
    }
}

#[test]
fn unbraced_expect_then_send_on_the_next_line() {
    for (case, text) in [
        (
            "expect then send",
            format!("spawn ssh bob@h\nexpect \"assword:\"\nsend \"{PW}\\r\"\ninteract\n"),
        ),
        (
            "indented",
            format!("  expect \"Password: \"\n  send \"{PW}\\n\"\n"),
        ),
        (
            "send -- form",
            format!("expect \"password:\"\nsend -- \"{PW}\\r\"\n"),
        ),
    ] {
        assert_gone(case, &text, PW, "send");
    }
    assert_kept("expect \"assword:\"\nsend \"$env(PW)\\r\"\n");
    assert_kept("expect \"$ \"\nsend \"ls -la\\r\"\n");
}

const SECRET_YAML: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ndata:\n  database-url: cG9zdGdyZXM6Ly91c2VyOnBhc3NAaG9zdC9kYg==\n";
const KEY_BLOCK: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACBq8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aEq8ZtR3nV7mKAAAAJgAAAAAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";

/// `text` behind bat's gutter (`   1   │ `) or `cat -n`'s (`     1\t`).
fn guttered(text: &str, bat: bool) -> String {
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            if bat {
                format!("{:>4}   │ {l}\n", i + 1)
            } else {
                format!("{:>6}\t{l}\n", i + 1)
            }
        })
        .collect()
}

#[test]
fn gutters_of_bat_and_cat_n_in_front_of_secrets_and_keys() {
    for bat in [true, false] {
        assert_gone(
            &format!("k8s Secret behind a gutter (bat: {bat})"),
            &guttered(SECRET_YAML, bat),
            "cG9zdGdyZXM6Ly91c2VyOnBhc3NAaG9zdC9kYg",
            "name: db",
        );
        // With `cat -n`'s gutter (bat: false) this guards existing behaviour: main already
        // redacts it; the bat gutter is the fix.
        assert_gone(
            &format!("key block behind a gutter (bat: {bat})"),
            &guttered(KEY_BLOCK, bat),
            "QyNTUxOQAAACBq8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE",
            "1",
        );
        assert_kept(&guttered(
            "apiVersion: v1\nkind: ConfigMap\ndata:\n  log-level: ZGVidWc=\n",
            bat,
        ));
    }
}

#[test]
fn yaml_anchors_next_line_values_and_flow_mappings() {
    for (case, text, keep) in [
        (
            "anchor",
            format!("db:\n  password: &pw {PW}\n  replica: *pw\n"),
            "&pw",
        ),
        (
            "anchor, quoted",
            format!("db:\n  password: &pw \"{PW}\"\n"),
            "&pw",
        ),
        (
            "value on the next line",
            format!("db:\n  password:\n    {PW}\n  port: 5432\n"),
            "port: 5432",
        ),
        (
            "folded value",
            format!("db:\n  password: >-\n    {PW}\n  port: 5432\n"),
            "port: 5432",
        ),
        // The two flow-mapping cases guard existing behaviour (main already redacts them).
        (
            "multi-line flow mapping",
            format!("db: {{ user: bob,\n  password: {PW},\n  port: 5432 }}\n"),
            "port: 5432",
        ),
        (
            "flow mapping, value last",
            format!("db: {{user: bob,\n      password: {PW}}}\n"),
            "user: bob",
        ),
    ] {
        assert_gone(case, &text, PW, keep);
    }
    assert_kept("defaults: &defaults\n  password: *default_pw\n");
    assert_kept("db:\n  password:\n  port: 5432\n");
}

#[test]
fn prose_after_a_password_label_stays() {
    for kept in [
        "password: TODO fix later\n",
        "password: see the vault\n",
        "  password: TODO\n",
        "# password: ask Bob for it\n",
        "password: set via env\n",
    ] {
        assert_kept(kept);
    }
}

/// Round 8: a note word (`here`, `later`, `ask`, `env`) after the first word made a whole
/// passphrase look like a note and kept it; a note starts with its note word.
#[test]
fn passphrases_with_a_note_word_inside_are_redacted() {
    for (text, secret) in [
        ("password: welcome here\n", "welcome here"),
        ("password: letmein later\n", "letmein later"),
        ("password: dragon ask\n", "dragon ask"),
        ("password: correct horse env staple\n", "horse env staple"),
        (
            "password: purple monkey dishwasher here\n",
            "monkey dishwasher here",
        ),
        ("passphrase: correct horse here staple\n", "horse here staple"),
    ] {
        assert_gone(text, text, secret, "pass");
    }
    for kept in [
        "password: ask Bob\n",
        "password: later\n",
        "password: via env\n",
        "password: vault here\n",
    ] {
        assert_kept(kept);
    }
}

/// Round 8: Rust references (`&dyn`, `&mut`, `&impl`, `&'a`) after a strong name were read
/// as YAML anchors, and the type behind them as the value.
#[test]
fn rust_references_after_a_secret_name_are_no_yaml_anchors() {
    for kept in [
        "    key: &dyn HandshakeTokenKey,\n",
        "        key_schedule: &mut KeyScheduleHandshakeStart,\n",
        "    secret: &mut SecretKeyMaterial,\n",
        "fn set(password: &impl AsRef<str>, token: &mut TokenStore) {}\n",
        "fn f<'a>(secret: &'a SecretKeyMaterial) {}\n",
        "let x = Config { password: &mut PasswordHolder };\n",
    ] {
        assert_kept(kept);
    }
    assert_gone(
        "anchor after a gutter",
        &format!("  12. password: &pw {PW}\n"),
        PW,
        "&pw",
    );
}

/// Round 8: a value on the line after its key, behind a viewer's gutter (bat, `cat -n`, the
/// view tool), as a passphrase, or over several lines of a block scalar.
#[test]
fn next_line_values_behind_gutters_phrases_and_block_scalars() {
    for (case, text, secret, keep) in [
        (
            "bat gutter",
            format!("   1   │ db:\n   2   │   password:\n   3   │     {PW}\n   4   │   port: 5432\n"),
            PW,
            "port: 5432",
        ),
        (
            "cat -n gutter",
            format!("     1\tdb:\n     2\t  password:\n     3\t    {PW}\n"),
            PW,
            "db:",
        ),
        (
            "view tool gutter, folded",
            format!("1. db:\n2.   password: >-\n3.     {PW}\n4.   port: 5432\n"),
            PW,
            "port: 5432",
        ),
        (
            "passphrase on the next line",
            "password:\n    correct horse battery staple\nport: 5432\n".to_string(),
            "horse battery staple",
            "port: 5432",
        ),
        (
            "second line of a block scalar",
            format!("db:\n  password: |-\n    {PW}\n    Pw9xLine2\n  port: 5432\n"),
            "Pw9xLine2",
            "port: 5432",
        ),
    ] {
        assert_gone(case, &text, secret, keep);
    }
    assert_kept("   1   │ db:\n   2   │   password:\n   3   │   port: 5432\n");
    assert_kept("password:\n    see the vault\n");
    // A description of the value under its key, naming the key's own word.
    assert_kept("secret:\n  Kubernetes secret name holding keys\n");
}

/// Round 8: URL-encoded pairs encoded twice (`%253D`, `%2526`), with an encoded quote
/// around the value (`%22…%22`), or with an encoded `;` inside it; an encoded mask stays.
#[test]
fn double_encoded_and_quoted_encoded_passwords() {
    for (case, text, secret, keep) in [
        (
            "double-encoded redirect",
            format!("?next=%2Fhome%3Fpassword%253D{PW}%2526lang%253Den"),
            PW,
            "lang%253Den",
        ),
        (
            "encoded quotes",
            format!("?q=password%3D%22{PW}%22%26x%3D1"),
            PW,
            "x%3D1",
        ),
        (
            "encoded ; inside",
            "?q=password%3DS3cret%3BPw9x%26x%3D1".to_string(),
            "Pw9x",
            "x%3D1",
        ),
        (
            // Behind a single `%3D`, `%2526` is the password's own `&`, encoded twice.
            "an encoded-twice & inside a once-encoded value",
            "next=%2Flogin%3Fpassword%3DHunter2LongHead9%2526TailSecret9x%26x%3D1".to_string(),
            "TailSecret9x",
            "x%3D1",
        ),
        (
            "a short head before an encoded-twice &",
            "next=%2Flogin%3Fpassword%3DAb%2526Cd9xyzQ%26x%3D1".to_string(),
            "Cd9xyzQ",
            "x%3D1",
        ),
    ] {
        assert_gone(case, &text, secret, keep);
    }
    assert_kept("?q=password%3D%2A%2A%2A%2A%26x%3D1");
}

/// Round 8: a line between an expect prompt and its answer (`sleep 1`, a comment).
#[test]
fn expect_then_send_with_a_line_between() {
    for (case, text) in [
        (
            "sleep between",
            format!("expect \"password:\"\nsleep 1\nsend \"{PW}\\r\"\n"),
        ),
        (
            "sleep and a comment between",
            format!("  expect \"Password: \"\n  # answer it\n  sleep 1\n  send \"{PW}\\r\"\n"),
        ),
    ] {
        assert_gone(case, &text, PW, "sleep 1");
    }
    assert_kept("expect \"password:\"\nexpect \"$ \"\nsend \"ls -la\\r\"\n");
    assert_kept("expect \"password:\"\nsleep 1\nsend \"$env(PW)\\r\"\n");
}

/// Round 8: more viewers' gutters: `   1   | `, a heavy bar `┃`, a no-break space before `│`.
#[test]
fn more_gutters_in_front_of_keys() {
    for bar in ["|", "┃", "\u{a0}│"] {
        let text: String = SECRET_YAML
            .lines()
            .enumerate()
            .map(|(i, l)| format!("{:>4}  {bar} {l}\n", i + 1))
            .collect();
        assert_gone(
            &format!("k8s Secret behind `{bar}`"),
            &text,
            "cG9zdGdyZXM6Ly91c2VyOnBhc3NAaG9zdC9kYg",
            "name: db",
        );
        let text = format!("   1  {bar} db:\n   2  {bar}   password:\n   3  {bar}     {PW}\n");
        assert_gone(&format!("next-line value behind `{bar}`"), &text, PW, "db:");
    }
}
