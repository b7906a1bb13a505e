//! YAML shapes the round-7 attack listed as left (each a leak on main too), as named cases: a tag
//! before the value, a block scalar's indentation indicator or trailing comment, a blank line
//! between the key and its value on the next line. Each secret must be gone in plain text and
//! inside a JSON line of tool output alike.

#[path = "common/redaction.rs"]
mod redaction;
use redaction::{assert_gone, assert_kept, redact};

const PW: &str = "S3cretPw9x";
const TOKEN: &str = "q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE";

#[test]
fn yaml_values_behind_tags_indicators_and_blank_lines() {
    for (case, text, secret) in [
        (
            "tag then same-line value",
            format!("db:\n  password: !!str {PW}\n  port: 5432"),
            PW,
        ),
        (
            "local tag then block scalar",
            format!("password: !vault |\n  {TOKEN}\nport: 5432"),
            TOKEN,
        ),
        (
            "tag then block scalar",
            format!("password: !!binary |\n  {TOKEN}\nport: 5432"),
            TOKEN,
        ),
        (
            "indentation indicator",
            format!("password: |2\n  {PW}\nport: 5432"),
            PW,
        ),
        (
            "indicator and chomping",
            format!("secret_key: >2-\n  {TOKEN}\nport: 5432"),
            TOKEN,
        ),
        (
            "comment after indicator",
            format!("password: | # rotated monthly\n  {PW}\nport: 5432"),
            PW,
        ),
        (
            "blank line before the value",
            format!("password:\n\n  {PW}\nport: 5432"),
            PW,
        ),
    ] {
        assert_gone(case, &text, secret, "port: 5432");
    }
}

#[test]
fn yaml_look_alikes_stay() {
    for text in [
        "tags: !!set\n  ? a\n  ? b",
        "password: | # see the vault\n\nport: 5432",
        "password:\n\nport: 5432",
    ] {
        assert_kept(text);
    }
    // A local tag names what the value is looked up by: the name behind it is no secret.
    for (text, name) in [
        ("MasterUserPassword: !Ref DbPassword\nPort: 5432", "DbPassword"),
        (
            "wifi_password: !secret wifi_password\nssid: home",
            "wifi_password\nssid",
        ),
    ] {
        assert!(redact(text).contains(name), "{text:?} -> {:?}", redact(text));
    }
}
