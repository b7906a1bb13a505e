//! Leaks found by a black-box review of redaction (round 4), as named cases: each secret
//! must be gone entirely, in plain text and inside a JSON line of tool output alike.

use kcap::redact::REDACTED;

#[path = "common/redaction.rs"]
mod redaction;
use redaction::{content, in_json, redact};

/// No 12-byte window of `secret` survives, and `keep` does.
#[track_caller]
fn assert_gone(case: &str, text: &str, secret: &str, keep: &str) {
    for (how, out) in [
        ("plain", redact(text)),
        ("json", content(&redact(&in_json(text)))),
    ] {
        let w = secret.len().min(12);
        let leaked = (0..=secret.len() - w)
            .step_by(w.max(1))
            .find(|&i| out.contains(&secret[i..i + w]));
        assert!(
            leaked.is_none() && out.contains(keep) && out.contains(REDACTED),
            "{case} ({how}): leaked at {leaked:?}: {:?}",
            &out[..out.len().min(300)]
        );
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
const URLSAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[test]
fn values_longer_than_the_scan_cap_are_redacted_to_their_end() {
    let pw = random(
        5000,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#%",
        1,
    );
    assert_gone("long password", &format!("password={pw}"), &pw, "password=");
    let jwt = format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.{}",
        random(4400, URLSAFE, 2),
        random(342, URLSAFE, 3)
    );
    assert_gone(
        "long bearer",
        &format!("Authorization: Bearer {jwt}\nnext"),
        &jwt,
        "next",
    );
    let key = format!("{}==", random(4420, B64, 4));
    assert_gone(
        "k8s tls.key",
        &format!("data:\n  tls.crt: abc\n  tls.key: {key}\nkind: Secret"),
        &key,
        "kind: Secret",
    );
    assert_gone(
        "kubeconfig client-key-data",
        &format!("    client-key-data: {key}\n    token: x"),
        &key,
        "client-key-data:",
    );
    let quoted = format!("\"password\": \"{pw}\", \"user\": \"bob\"");
    assert_gone("long quoted password", &quoted, &pw, "\"user\": \"bob\"");
}

#[test]
fn a_long_quoted_bearer_value_ends_at_its_quote() {
    let jwt = random(5000, URLSAFE, 5);
    let text = format!("{{\"Authorization\": \"Bearer {jwt}\", \"Accept\": \"text/html\"}}");
    let out = redact(&text);
    assert!(!out.contains(&jwt[4500..]), "{}", &out[..200]);
    assert!(
        out.ends_with("\", \"Accept\": \"text/html\"}"),
        "{}",
        &out[out.len() - 100..]
    );
    serde_json::from_str::<serde_json::Value>(&out).expect("valid JSON");
}

#[test]
fn name_value_pair_objects_are_named_values() {
    for (case, text, secret, keep) in [
        (
            "k8s env password",
            r#"{"env":[{"name":"DB_PASSWORD","value":"Tr0ub4dor3"},{"name":"API_TOKEN","value":"q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE"}]}"#,
            "Tr0ub4dor3",
            "DB_PASSWORD",
        ),
        (
            "k8s env token",
            r#"{"env":[{"name":"DB_PASSWORD","value":"Tr0ub4dor3"},{"name":"API_TOKEN","value":"q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE"}]}"#,
            "q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE",
            "API_TOKEN",
        ),
        (
            "HAR header",
            r#"{"name":"Authorization","value":"Basic dXNlcjpwYXNzd29yZDEyMw=="}"#,
            "dXNlcjpwYXNzd29yZDEyMw",
            "Authorization",
        ),
        (
            "key/value pair",
            r#"{"key": "DB_PASSWORD", "value": "Tr0ub4dor3"}"#,
            "Tr0ub4dor3",
            "DB_PASSWORD",
        ),
        (
            "YAML env",
            "env:\n- name: DB_PASSWORD\n  value: Tr0ub4dor3\n- name: LOG_LEVEL\n  value: debug",
            "Tr0ub4dor3",
            "value: debug",
        ),
        (
            "YAML env quoted",
            "        - name: API_TOKEN\n          value: \"q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE\"",
            "q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE",
            "API_TOKEN",
        ),
    ] {
        assert_gone(case, text, secret, keep);
    }
    // A pair whose name is not secret-like keeps its value.
    let kept = r#"{"env":[{"name":"LOG_LEVEL","value":"debug"},{"name":"PORT","value":"8080"}]}"#;
    assert_eq!(redact(kept), kept);
    let kept = "- name: LOG_LEVEL\n  value: debug";
    assert_eq!(redact(kept), kept);
}

#[test]
fn an_aws_secret_key_after_its_key_id_is_a_secret() {
    for (case, text) in [
        (
            "credentials.csv",
            "User name,Password,Access key ID,Secret access key\nbob,,AKIAQ3EGUMZ5EXAMPLE2,wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ8kLmN0pQ",
        ),
        ("prose", "use AKIAQ3EGUMZ5EXAMPLE2 / wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ8kLmN0pQ for that"),
        ("session", "ASIAQ3EGUMZ5EXAMPLE2 wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ8kLmN0pQ"),
    ] {
        assert_gone(case, text, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ8kLmN0pQ", "");
    }
    // Forty letters far from any key id are prose or code, not a key.
    let kept = "see abcdefghijklmnopqrstuvwxyzabcdefghijklmn in the docs";
    assert_eq!(redact(kept), kept);
}

#[test]
fn multi_line_netrc_passwords_are_redacted() {
    for (case, text) in [
        (
            "netrc",
            "machine api.example.com\n  login bob\n  password Tr0ub4dor3\n",
        ),
        ("netrc no login", "machine api.example.com\npassword Tr0ub4dor3"),
        ("netrc default", "default\n  login bob\n  password Tr0ub4dor3"),
    ] {
        assert_gone(case, text, "Tr0ub4dor3", "password ");
    }
    // Prose about a password on a line of its own is not a netrc entry.
    for kept in [
        "machine learning\n\nthe password reset flow works",
        "machine learning\npassword reset_flow works",
        "some notes\n  password reset_flow works",
    ] {
        assert_eq!(redact(kept), kept);
    }
}

#[test]
fn expect_scripts_send_their_password() {
    for (case, text) in [
        (
            "two lines",
            "expect \"password:\"\nsend \"Tr0ub4dor&3\\r\"\ninteract",
        ),
        ("one line", "expect \"password:\" { send \"Tr0ub4dor&3\\r\" }"),
        (
            "Password prompt",
            "expect \"*Password*\"\n  send -- \"Tr0ub4dor&3\\r\"",
        ),
    ] {
        assert_gone(case, text, "Tr0ub4dor&3", "send");
        assert!(redact(text).contains("send"), "{case}");
    }
    let one = redact("expect \"password:\" { send \"Tr0ub4dor&3\\r\" }");
    assert!(one.contains("{ send \""), "the wrong range is redacted: {one}");
    let kept = "expect \"login:\"\nsend \"bob\\r\"";
    assert_eq!(redact(kept), kept);
}
