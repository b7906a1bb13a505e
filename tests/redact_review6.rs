//! Leaks and over-redaction found by an independent attack on redaction (round 6), as named
//! cases: each secret must be gone in plain text and inside a JSON line of tool output alike,
//! and each look-alike that is no secret must come through unchanged.

#[path = "common/redaction.rs"]
mod redaction;
use redaction::{assert_gone, assert_kept};

/// `text` as the `view` tool prints a file: each line behind its number (`1. `), or in the
/// column form of other viewers (`  12 | `).
fn numbered(text: &str, column: bool) -> String {
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            if column {
                format!("{:>4} | {l}\n", i + 1)
            } else {
                format!("{}. {l}\n", i + 1)
            }
        })
        .collect()
}

const SECRET_YAML: &str = "apiVersion: v1\ndata:\n  database-url: cG9zdGdyZXM6Ly91c2VyOnBhc3NAaG9zdC9kYg==\nkind: Secret\nmetadata:\n  name: db\n";
const PUTTY: &str = "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nPublic-Lines: 1\nAAAAC3NzaC1lZDI1NTE5AAAAIB\nPrivate-Lines: 1\nAAAAIGq8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aEq8ZtR3nV7mK\nPrivate-MAC: 1234abcdef\n";

#[test]
fn line_numbered_views_of_secrets_and_keys() {
    for column in [false, true] {
        assert_gone(
            "k8s Secret in a numbered view",
            &numbered(SECRET_YAML, column),
            "cG9zdGdyZXM6Ly91c2VyOnBhc3NAaG9zdC9kYg",
            "name: db",
        );
        assert_gone(
            "PuTTY key in a numbered view",
            &numbered(PUTTY, column),
            "AAAAIGq8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE",
            "Private-MAC",
        );
    }
    // A ConfigMap stays in a numbered view too.
    assert_kept(&numbered(
        "apiVersion: v1\ndata:\n  log-level: ZGVidWc=\nkind: ConfigMap\n",
        false,
    ));
}

#[test]
fn kubernetes_secrets_in_other_yaml_styles() {
    for (case, text, secret) in [
        (
            "quoted kind",
            "apiVersion: v1\nkind: \"Secret\"\ndata:\n  api: cG9zdGdyZXM6Ly91c2VyOnBhc3NA\n",
            "cG9zdGdyZXM6Ly91c2VyOnBhc3NA",
        ),
        (
            "single-quoted kind",
            "kind: 'Secret'\ndata:\n  api: cG9zdGdyZXM6Ly91c2VyOnBhc3NA\n",
            "cG9zdGdyZXM6Ly91c2VyOnBhc3NA",
        ),
        (
            "block scalar",
            "kind: Secret\nstringData:\n  config.ini: |\n    user = app\n    dsn = Zq8Tr3Vn7Mk2Pl9X\n  other: x\n",
            "Zq8Tr3Vn7Mk2Pl9X",
        ),
        (
            "folded block scalar",
            "kind: Secret\nstringData:\n  cert: >-\n    Zq8Tr3Vn7Mk2Pl9X\n",
            "Zq8Tr3Vn7Mk2Pl9X",
        ),
        (
            "flow style",
            "kind: Secret\ndata: {password: aHVudGVyMnhBYmM=, user: Ym9i}\n",
            "aHVudGVyMnhBYmM",
        ),
    ] {
        assert_gone(case, text, secret, "Secret");
    }
}

#[test]
fn a_configmap_next_to_a_secret_keeps_its_values() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  log-level: debug\n  region: eu-west-1\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ndata:\n  pw: aHVudGVyMnhBYmM=\n";
    assert_gone("the Secret's value", text, "aHVudGVyMnhBYmM", "log-level: debug");
    assert_gone(
        "the ConfigMap's values",
        text,
        "aHVudGVyMnhBYmM",
        "region: eu-west-1",
    );
}

#[test]
fn a_quoted_assignment_as_one_string() {
    for (case, text) in [
        ("env list", "env: [\"DB_PASSWORD=hunter2x\"]"),
        (
            "docker compose list",
            "environment:\n  - \"DB_PASSWORD=hunter2x\"\n",
        ),
        ("argv", "args = ['--x', 'DB_PASSWORD=hunter2x']"),
        (
            "json array",
            "{\"Env\":[\"PATH=/usr/bin\",\"DB_PASSWORD=hunter2x\"]}",
        ),
    ] {
        assert_gone(case, text, "hunter2x", "DB_PASSWORD=");
    }
    // A value with blanks ends at the string's closing quote, not at its first blank.
    for (case, text) in [
        ("env list, blanks", "env: [\"DB_PASSWORD=hunter two x\"]"),
        ("argv, blanks", "args = ['--x', 'DB_PASSWORD=hunter two x']"),
    ] {
        assert_gone(case, text, "two x", "DB_PASSWORD=");
    }
    assert_kept("env: [\"DB_PASSWORD=$DB_PASSWORD\", \"MODE=a b\"]");
}

#[test]
fn compact_json_nested_in_a_string() {
    for (case, text) in [
        ("python string", "body = '{\"password\":\"Hunter2xyz\"}'"),
        (
            "curl data",
            "curl -d '{\"user\":\"bob\",\"password\":\"Hunter2xyz\"}' https://x",
        ),
        (
            "escaped twice",
            "{\"body\":\"{\\\"password\\\":\\\"Hunter2xyz\\\"}\"}",
        ),
    ] {
        assert_gone(case, text, "Hunter2xyz", "password");
    }
}

/// Deterministic pseudo-random text over `alphabet` (xorshift; no clock, no crate).
fn random(len: usize, alphabet: &[u8], mut seed: u64) -> String {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            alphabet[(seed % alphabet.len() as u64) as usize] as char
        })
        .collect()
}

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

#[test]
fn values_over_a_kilobyte_are_redacted_whole() {
    let v = random(1500, B64, 7);
    for (case, text) in [
        ("any name", format!("FLUX_CAPACITOR={v}\nPORT=8080")),
        ("yaml, any name", format!("flux: \"{v}\"\nport: 8080")),
        ("weak name", format!("api_key: {v}\nport: 8080")),
    ] {
        // Whole: no 12-byte piece of it is left, at its start, middle or end.
        for piece in [&v[..12], &v[700..712], &v[v.len() - 12..]] {
            assert_gone(case, &text, piece, "8080");
        }
    }
}

#[test]
fn command_line_passwords_in_more_shapes() {
    for (case, text, keep) in [
        (
            "echo -e with an escape",
            "echo -e \"S3cretPw9\\n\" | sudo -S apt-get update",
            "sudo -S",
        ),
        (
            "smbclient attached -U",
            "smbclient //nas/share -Ubob%S3cretPw9",
            "-Ubob%",
        ),
        (
            "curl with a variable user",
            "curl -u \"$USER:S3cretPw9\" https://x.io",
            "$USER:",
        ),
        (
            "curl with a braced variable user",
            "curl -u ${API_USER}:S3cretPw9 https://x.io",
            "${API_USER}:",
        ),
    ] {
        assert_gone(case, text, "S3cretPw9", keep);
    }
    for kept in [
        "echo -e \"$PW\\n\" | sudo -S true",
        "curl -u \"$USER:$PASS\" https://x.io",
        "smbclient -L nas -N",
    ] {
        assert_kept(kept);
    }
}

#[test]
fn braced_expect_forms() {
    for (case, text) in [
        ("one line", "expect {\"password:\" {send \"S3cretPw9\\r\"}}"),
        (
            "multi-line block",
            "expect {\n  \"Password:\" { send \"S3cretPw9\\r\"; exp_continue }\n  eof\n}",
        ),
    ] {
        assert_gone(case, text, "S3cretPw9", "send");
    }
}

#[test]
fn unquoted_yaml_passphrases() {
    for (case, text, secret) in [
        (
            "passphrase",
            "ssh:\n  passphrase: my secret words\n",
            "my secret words",
        ),
        (
            "password of words",
            "db:\n  password: correct horse battery staple\n",
            "horse battery",
        ),
    ] {
        assert_gone(case, text, secret, ":");
    }
    for kept in [
        "password: must be at least 12 characters\n",
        "# the passphrase: see the vault\n",
    ] {
        assert_kept(kept);
    }
}

#[test]
fn session_ids_and_cookie_jars() {
    let sid = "q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE";
    for (case, text) in [
        ("SESSION_ID=", format!("SESSION_ID={sid}\nPORT=1")),
        ("X-Session-Id header", format!("X-Session-Id: {sid}\nAccept: */*")),
        (
            "Netscape cookie jar",
            format!("# Netscape HTTP Cookie File\n.example.com\tTRUE\t/\tTRUE\t1767225600\tauth\t{sid}\n"),
        ),
        (
            "cookie jar, HttpOnly line",
            format!("#HttpOnly_.example.com\tTRUE\t/\tFALSE\t0\tsid\t{sid}\n"),
        ),
    ] {
        assert_gone(case, &text, sid, "");
    }
    for kept in [
        "SESSION_ID=0faecbdf-b889-4bca-a51a-5254f5488cb6",
        "example.com\tTRUE\t/\tFALSE\t0\tlang\ten-US\n",
    ] {
        assert_kept(kept);
    }
}

#[test]
fn look_alikes_in_code_are_kept() {
    for kept in [
        "const STANDARD: &str = \"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/\";",
        "URL_SAFE = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'",
        "alphabet: \"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789\"",
        "let token = MAX_CONNECTIONS_PER_HOST;",
        "password_policy = \"MAX_CONNECTIONS_PER_HOST\"",
        "{\"token\": \"MAX_CONNECTIONS_PER_HOST\"}",
        "SECRET_KEY = DEFAULT_SECRET_KEY_FROM_ENV",
        "assert_eq!(encode(b\"foobar\"), \"Zm9vYmFy\");",
        "(\"fooba\", \"Zm9vYmE=\"),",
        // Under a secret's name (`const KEY`) base64 of text is redacted: an encoded password
        // reads as text too. Without one, a test vector stays.
        "const SAMPLE_NONCE: &str = \"dGhlIHNhbXBsZSBub25jZQ==\"; // RFC 6455's",
        "assert_eq!(decode(\"dGhlIHNhbXBsZSBub25jZQ==\"), b\"the sample nonce\");",
        "x-amz-id-2: q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aEq8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE=",
        "x-amz-request-id: 4442587FB7D0A2F9",
    ] {
        assert_kept(kept);
    }
}

#[test]
fn a_token_inside_a_quoted_command_keeps_the_command() {
    const T: &str = "Xk9mQ2zP7w9rT4vB";
    for (case, text, keep) in [
        (
            "sh -c",
            "{\"c\":\"sh -c \\\"API_TOKEN=Xk9mQ2zP7w9rT4vB ./deploy.sh\\\"\"}",
            " ./deploy.sh",
        ),
        (
            "ssh",
            "ssh host \"AUTH_TOKEN=Xk9mQ2zP7w9rT4vB systemctl restart app\"",
            " systemctl restart app\"",
        ),
        ("argv list", "[\"API_KEY=Xk9mQ2zP7w9rT4vB --flag\"]", " --flag\"]"),
        (
            "Dockerfile RUN",
            "RUN \"NPM_TOKEN=Xk9mQ2zP7w9rT4vB npm publish\"",
            " npm publish\"",
        ),
        (
            "compose cmd",
            "cmd: [\"sh\",\"-c\",\"GITHUB_TOKEN=Xk9mQ2zP7w9rT4vB gh release create\"]",
            " gh release create\"]",
        ),
        ("docker -e", "docker run -e 'API_TOKEN=Xk9mQ2zP7w9rT4vB x'", " x'"),
        // A strong name: the first word is the password, the command after it is kept.
        (
            "strong name",
            "sh -c \"DB_PASSWORD=Xk9mQ2zP7w9rT4vB ./run --verbose\"",
            " ./run --verbose\"",
        ),
    ] {
        assert_gone(case, text, T, keep);
    }
}

#[test]
fn base64_of_credentials_after_a_name_is_redacted() {
    for (case, text, secret, keep) in [
        ("basic, passphrase", "Authorization: Basic Ym9iOmNvcnJlY3QgaG9yc2UgYmF0dGVyeSBzdGFwbGU=", "Ym9iOmNvcnJlY3Qg", "Authorization: Basic "),
        ("basic, words", "Authorization: Basic YWRtaW46YWRtaW4gc2VjcmV0", "YWRtaW46YWRtaW4g", "Authorization: Basic "),
        ("user:pass words", "AUTH_B64=Ym9iOm15IHBhc3Mgd29yZA==", "Ym9iOm15IHBhc3Mg", "AUTH_B64="),
        (
            "docker auth JSON",
            "DOCKER_AUTH_CONFIG=eyJhdXRocyI6IHsici5pbyI6IHsidXNlcm5hbWUiOiAiYm9iIiwgInBhc3N3b3JkIjogIkh4OSFrUTJ6UCJ9fX0=",
            "eyJhdXRocyI6IHsici5pbyI6",
            "DOCKER_AUTH_CONFIG=",
        ),
        ("lower-case word", "api_key=c3VwZXJzZWNyZXR2YWx1ZQ==", "c3VwZXJzZWNyZXR2YWx1ZQ", "api_key="),
        ("header", "X-Api-Key: YWJjZGVmZ2hpamtsbW5vcA==", "YWJjZGVmZ2hpamtsbW5vcA", "X-Api-Key: "),
    ] {
        assert_gone(case, text, secret, keep);
    }
}

#[test]
fn constant_style_passwords_under_strong_names() {
    for (case, text, secret) in [
        ("words and a digit", "DB_PASSWORD=PROD_DB_PASS1", "PROD_DB_PASS1"),
        (
            "random groups",
            "API_TOKEN=XKQZ_MWPT_RVBN_LQ42",
            "XKQZ_MWPT_RVBN_LQ42",
        ),
    ] {
        assert_gone(case, text, secret, "=");
    }
}

#[test]
fn an_alphabet_run_in_part_of_a_token() {
    assert_gone(
        "token with an alphabet tail",
        "token=Xk9mQ2zP7w9rT4vBabcdefghijkl",
        "Xk9mQ2zP7w9rT4vB",
        "token=",
    );
}

#[test]
fn a_secret_data_block_across_blank_lines_and_lower_case_kind() {
    assert_gone(
        "blank line inside data",
        "kind: Secret\ndata:\n  conn: Xk9mQ2zP7w9rT4vB\n\n  conn2: Y29ycmVjdCBob3JzZSBiYXR0ZXJ5\n",
        "Y29ycmVjdCBob3JzZSBiYXR0ZXJ5",
        "conn2: ",
    );
    assert_gone(
        "lower-case kind",
        "kind: secret\ndata:\n  conn: Y29ycmVjdCBob3JzZSBiYXR0ZXJ5\n",
        "Y29ycmVjdCBob3JzZSBiYXR0ZXJ5",
        "conn: ",
    );
    // The block still ends at a line indented no deeper than `data:`.
    assert_kept("kind: Secret\ndata:\n\nmetadata:\n  name: Y29ycmVjdCBob3JzZSBiYXR0ZXJ5\n");
}

#[test]
fn a_jar_line_after_a_long_line_of_jar_flags() {
    // A line of `\tTRUE\t/` back to back is judged once, and skipped to its end: the jar
    // line after it is still read (its linearity is measured by kcap-bench).
    let text = format!(
        "{}\n.example.com\tTRUE\t/\tTRUE\t0\tsid\tq8ZtR3nV7mK2pL9xW4bC6dF1\n",
        "\tTRUE\t/".repeat(20_000)
    );
    assert_gone(
        "jar line after flags",
        &text,
        "q8ZtR3nV7mK2pL9xW4bC6dF1",
        "\tsid\t",
    );
}

#[test]
fn smbclient_long_user_flag() {
    for text in [
        "smbclient //h/s --user=bob%Xk9mQ2zPw",
        "smbclient //h/s --user bob%Xk9mQ2zPw",
    ] {
        assert_gone("smbclient --user", text, "Xk9mQ2zPw", "bob%");
    }
}

#[test]
fn kubernetes_secrets_in_diffs_and_grep_output() {
    const B64: &str = "Y29ycmVjdCBob3JzZSBiYXR0ZXJ5";
    let plain = format!("kind: Secret\ndata:\n  conn: {B64}\n");
    let diff: String = plain.lines().map(|l| format!("+{l}\n")).collect();
    let grep: String = plain
        .lines()
        .enumerate()
        .map(|(i, l)| format!("{}:{l}\n", i + 5))
        .collect();
    let grep_context: String = plain
        .lines()
        .enumerate()
        .map(|(i, l)| format!("{}-{l}\n", i + 5))
        .collect();
    let grep_files: String = plain
        .lines()
        .enumerate()
        .map(|(i, l)| format!("k8s/app.yaml:{}:{l}\n", i + 5))
        .collect();
    for (case, text) in [
        ("diff", diff),
        ("grep -n", grep),
        ("grep -n context", grep_context),
        ("grep -n files", grep_files),
    ] {
        assert_gone(case, &text, B64, "conn: ");
    }
}
