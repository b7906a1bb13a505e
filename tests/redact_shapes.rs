//! The hostile shapes of issue #10, as named cases: each secret must be gone (its name kept),
//! each piece of code must come out unchanged, inside plain text and inside a JSON line of tool
//! output alike.

use kcap::redact::REDACTED;

#[path = "common/redaction.rs"]
mod redaction;
use redaction::{assert_gone, assert_kept, content, in_json, redact};

/// (case, text, secret that must disappear, text that must stay)
const LEAKS: &[(&str, &str, &str, &str)] = &[
    ("value with #", "DB_PASSWORD=P#ssw0rd2024", "P#ssw0rd2024", "DB_PASSWORD="),
    ("value with ;", "export DB_PASSWORD=abc;def123 && ls", "abc;def123", "&& ls"),
    ("value with & and ,", "SECRET_KEY=a&b,c9x", "a&b,c9x", "SECRET_KEY="),
    ("escaped quote inside", r#"password = "pa\"ss1word""#, "ss1word", "password = "),
    ("digit-only password", "PIN=482913", "482913", "PIN="),
    ("digit-only password in YAML", "password: 12345678", "12345678", "password:"),
    ("terraform spacing", "  admin_password         =         \"Tf-s3cret!\"", "Tf-s3cret!", "admin_password"),
    ("aligned YAML", "db_password:              hunter2x", "hunter2x", "db_password:"),
    ("Go :=", "dbPassword := \"g0pher!\"", "g0pher!", "dbPassword"),
    ("BNF ::=", "PASSWORD ::= s3cr3tValue", "s3cr3tValue", "PASSWORD"),
    ("make ?=", "DEPLOY_TOKEN ?= Zq81mNx0PqL2vR7s", "Zq81mNx0PqL2vR7s", "DEPLOY_TOKEN"),
    ("PHP =>", "'db_password' => 'phpS3cret'", "phpS3cret", "'db_password' =>"),
    ("PHP .=", "$password .= 'tail9x'", "tail9x", "$password"),
    ("setProperty", "props.setProperty(\"javax.net.ssl.keyStorePassword\", \"st0rePw\");", "st0rePw", "setProperty"),
    ("XML element", "<password>xmlS3cret</password>", "xmlS3cret", "<password>"),
    ("Go typed var", "var apiPassword string = \"typedS3cret\"", "typedS3cret", "var apiPassword string"),
    ("Rust typed const", "const DB_PASSWORD: &str = \"rustS3cret\";", "rustS3cret", "DB_PASSWORD"),
    ("DB_PASS", "DB_PASS=Pg-pass-81", "Pg-pass-81", "DB_PASS="),
    ("MYSQL_PWD", "MYSQL_PWD=my5qlpw", "my5qlpw", "MYSQL_PWD="),
    ("ENCRYPTION_KEY", "ENCRYPTION_KEY=9fK2xL0qP7wR4tY8uI3oA6sD", "9fK2xL0qP7wR4tY8uI3oA6sD", "ENCRYPTION_KEY="),
    (
        "Azure AccountKey",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6QUJDREVGR0g=;EndpointSuffix=core.windows.net",
        "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFi",
        "EndpointSuffix",
    ),
    ("--password X", "mysqldump --password Sup3rSecret db", "Sup3rSecret", "mysqldump --password"),
    ("--token=X", "tool --token=Qx7Lm2Np9Rs4Tv6W", "Qx7Lm2Np9Rs4Tv6W", "--token="),
    ("mysql -pX", "mysql -u root -pR00tPw! app", "R00tPw!", "mysql -u root -p"),
    ("curl -u", "curl -u admin:Cu7lPw https://x", "Cu7lPw", "curl -u admin:"),
    ("netrc", "machine api.example.com login bob password n3trcPw", "n3trcPw", "login bob password"),
    ("pgpass", "db.internal:5432:app:app_user:pgPassw0rd", "pgPassw0rd", "db.internal:5432"),
    ("URL password with @", "postgres://app:p@ss@word1@db:5432/app", "ss@word1", "postgres://app:"),
    ("Authorization header", "Authorization: Bearer abc123def456ghi789", "abc123def456ghi789", "Bearer"),
    ("nested JSON with \": \"", r#"{"config": {"password": "nestedPw1", "user": "u"}}"#, "nestedPw1", "\"user\""),
    ("token after \\t", "name\tghp_0123456789abcdefghijklmnopqrstuvwxyz\tactive", "ghp_0123456789", "active"),
    ("token after \\r", "x\rglpat-abcdefghij0123456789", "glpat-abcdefghij", "x"),
    ("token after \\u0001", "\u{1}AIzaSyD4x9Qk2L7mN0pR5tV8wY1zB3cE6fH9jK2", "AIzaSyD4x9Q", ""),
    ("high-entropy value next to a name", "session_token: 'Zx8Qw2Er5Ty7Ui9Op1As'", "Zx8Qw2Er5Ty7Ui9Op1As", "session_token"),
];

#[test]
fn hostile_shapes_do_not_leak() {
    let long_pw = format!("https://user:{}@example.com/", "Lp9".repeat(120));
    let mut failures = Vec::new();
    let mut check = |case: &str, text: &str, secret: &str, keep: &str| {
        let plain = redact(text);
        let json_out = content(&redact(&in_json(text)));
        for (how, out) in [("plain", &plain), ("json", &json_out)] {
            if out.contains(secret) || !out.contains(keep) || !out.contains(REDACTED) {
                failures.push(format!("{case} ({how}): {text:?} -> {out:?}"));
            }
        }
    };
    for (case, text, secret, keep) in LEAKS {
        check(case, text, secret, keep);
    }
    check("userinfo over 256 bytes", &long_pw, "Lp9Lp9Lp9", "https://user:");
    // A token right after a JSON escape at the line's own level, and one level down.
    check(
        "token after \\n",
        "out:\nghp_0123456789abcdefghijklmnopqrstuvwxyz",
        "ghp_0123456789",
        "out:",
    );
    check(
        "escapes one level down",
        r#"{"c":"a\nsk-ant-api03-abcdefghijklmnopqrstuvwxyz"}"#,
        "abcdefghijklmnop",
        "{\"c\"",
    );
    assert!(
        failures.is_empty(),
        "{} leaks:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Code and prose an agent reads that must come out unchanged.
const KEPT: &[(&str, &str)] = &[
    ("enum path", "Token::U8(52) => visit_u8(v),"),
    ("Option type", "    pub password: Option<String>,"),
    ("String type", "fn set_password(password: String) -> Self {"),
    ("env placeholder", "export API_KEY=$API_KEY"),
    ("braced placeholder", "password: ${DB_PASSWORD}"),
    ("angle placeholder", "api_key: <your key here>"),
    ("changeme", "password = \"changeme\""),
    ("xxxx", "token: xxxxxxxxxxxxxxxx"),
    ("UUID", "\"token\": \"123e4567-e89b-12d3-a456-426614174000\""),
    ("identifier", "let token = self.token.clone();"),
    ("call", "password = getpass.getpass()"),
    ("counter", "\"outputTokens\": 2848, \"max_tokens\": 4096"),
    ("library names", "use jsonwebtoken::{decode, DecodingKey};"),
    ("comparison", "if password == confirm_password {"),
    ("env lookup", "token = os.environ[\"GITHUB_TOKEN\"]"),
    ("prose", "Please enter your password: it must be long."),
    ("type annotation", "secret_key: &'a [u8],"),
    ("struct field init", "Credentials { password, username }"),
    ("pwd", "PWD=/home/user/project"),
];

#[test]
fn code_is_not_a_secret() {
    let mut changed = Vec::new();
    for (case, text) in KEPT {
        for (how, out, want) in [
            ("plain", redact(text), text.to_string()),
            ("json", content(&redact(&in_json(text))), text.to_string()),
        ] {
            if out != want {
                changed.push(format!("{case} ({how}): {text:?} -> {out:?}"));
            }
        }
    }
    assert!(
        changed.is_empty(),
        "{} changed:\n{}",
        changed.len(),
        changed.join("\n")
    );
}

#[test]
fn an_empty_value_does_not_swallow_the_next_line() {
    let line = in_json("PASSWORD=\nNEXT_LINE=visible\nTOKEN:\nalso visible");
    assert_eq!(redact(&line), line);
}

/// A `[REDACTED]` already inside a secret (typed by someone, or left by an earlier pass) does not
/// shield the rest of it.
#[test]
fn an_existing_marker_does_not_shield_the_secret_around_it() {
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAx9Qk2L7mN0pR5tV8wY1zB3cE6fH9jK2\n[REDACTED]\nc3VwZXJzZWNyZXRrZXltYXRlcmlhbA\n-----END RSA PRIVATE KEY-----";
    let cases = [
        ("PEM body line", pem, "MIIEpAIBAAKCAQEA", "c3VwZXJzZWNyZXRr"),
        (
            "quoted password",
            "password=\"Xk9#mQ2z [REDACTED] tail9Q\"",
            "Xk9#mQ2z",
            "tail9Q",
        ),
        ("URL password", "postgres://u:Pw9x[REDACTED]@h/db", "Pw9x", "Pw9x"),
    ];
    for (case, text, first, second) in cases {
        for (how, out) in [
            ("plain", redact(text)),
            ("json", content(&redact(&in_json(text)))),
        ] {
            assert!(
                !out.contains(first) && !out.contains(second) && out.contains(REDACTED),
                "{case} ({how}): {text:?} -> {out:?}"
            );
            assert_eq!(redact(&out), out, "{case} ({how}): not idempotent");
        }
    }
}

/// base64 with one `=` of padding after `name:` (`kubectl get secret -o yaml`) is a value, not a
/// type annotation followed by an assignment.
#[test]
fn base64_with_one_padding_sign_after_a_colon_is_redacted() {
    for (text, secret) in [
        ("password: c3VwZXJzZWNyZXQ=", "c3VwZXJzZWNyZXQ"),
        ("  token: YWJjZGVmMTIzNDU2Nzg5MDEyMw=", "YWJjZGVmMTIzNDU2"),
    ] {
        for (how, out) in [
            ("plain", redact(text)),
            ("json", content(&redact(&in_json(text)))),
        ] {
            assert!(
                !out.contains(secret) && out.contains(REDACTED),
                "{how}: {text:?} -> {out:?}"
            );
        }
    }
}

/// Qualifiers that make `key` or `token` a data-structure word (`primary_key`, `search_key`) do
/// not cancel real credential names: Azure's `primaryMasterKey`, GitHub Actions' `INPUT_TOKEN`.
#[test]
fn qualified_credential_names_are_secrets() {
    let random = "Qz8Xw7Vc6Bn5Ml4Kj3Hg2Fd1";
    let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let cosmos =
        "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6QUJDREVGR0hJSktMTU5PUFFSU1Q=";
    let mut texts = vec![format!(
        "{{\"primaryMasterKey\": \"{cosmos}\", \"primaryReadonlyMasterKey\": \"{cosmos}\"}}"
    )];
    for name in [
        "PRIMARY_KEY",
        "SEARCH_API_KEY",
        "SSH_KEY",
        "INPUT_TOKEN",
        "S3_ACCESS_KEY",
        "SIGNING_KEY",
    ] {
        texts.push(format!("{name}={random}"));
        texts.push(format!("{name}={hex}"));
    }
    for text in &texts {
        for (how, out) in [
            ("plain", redact(text)),
            ("json", content(&redact(&in_json(text)))),
        ] {
            assert!(
                !out.contains(&random[..12]) && !out.contains(&hex[..12]) && !out.contains(&cosmos[..12]),
                "{how}: {text:?} -> {out:?}"
            );
        }
    }
    for kept in [
        "primary_key: Option<String>,",
        "impl KeyUsage {",
        "token_count: 52",
        "let sort_key = row.sort_key;",
    ] {
        assert_eq!(redact(kept), kept);
    }
}

/// A PEM header used as a string constant, with no key lines after it, is code: it must not
/// swallow the rest of a `view` result.
#[test]
fn a_pem_header_constant_in_code_is_not_a_key() {
    let code = "const HEADER: &str = \"-----BEGIN RSA PRIVATE KEY-----\";\nconst FOOTER: &str = \"-----END\";\nfn parse(pem: &str) -> Option<Key> {\n    pem.strip_prefix(HEADER)?;\n}\n";
    assert_eq!(content(&redact(&in_json(code))), code);
    assert_eq!(redact(code), code);
    // A real key, cut off, followed by code: the key goes, the code stays.
    let cut = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAx9Qk2L7mN0pR5tV8\n\";\nfn main() {}\n";
    let out = content(&redact(&in_json(cut)));
    assert!(
        !out.contains("MIIEpAIB") && out.contains("fn main() {}"),
        "{out:?}"
    );
}

/// .NET config `<add key="Password" value="…"/>` and `docker login -p X`.
#[test]
fn config_add_elements_and_docker_login_are_redacted() {
    for (text, secret, keep) in [
        (
            "<add key=\"Password\" value=\"Xk9mQ2zI\"/>",
            "Xk9mQ2zI",
            "<add key=\"Password\" value=",
        ),
        ("docker login -p D0ckerPw7 registry", "D0ckerPw7", "registry"),
        (
            "docker login -u bob -p D0ckerPw7 registry.example.com",
            "D0ckerPw7",
            "-u bob -p",
        ),
    ] {
        for (how, out) in [
            ("plain", redact(text)),
            ("json", content(&redact(&in_json(text)))),
        ] {
            assert!(
                !out.contains(secret) && out.contains(keep) && out.contains(REDACTED),
                "{how}: {text:?} -> {out:?}"
            );
        }
    }
    for kept in [
        "<add key=\"PasswordLength\" value=\"12\"/>",
        "docker run -p 8080:80 nginx",
    ] {
        assert_eq!(redact(kept), kept);
    }
}

#[test]
fn json_keys_judge_their_values() {
    assert_eq!(
        redact(r#"{"pin": 4821, "n": 1}"#),
        r#"{"pin": "[REDACTED]", "n": 1}"#
    );
    assert_eq!(
        redact(r#"{"db_password":"hunter22"}"#),
        r#"{"db_password":"[REDACTED]"}"#
    );
    assert_eq!(
        redact(r#"{"sig":"Zx8Qw2Er5Ty7Ui9Op1As"}"#),
        r#"{"sig":"[REDACTED]"}"#
    );
    let kept = r#"{"pin_memory": true, "tokenCount": 15639, "design": "Zx8Qw2Er5Ty7Ui9Op1As"}"#;
    assert_eq!(redact(kept), kept);
}

/// Only clear placeholders pass: a real value may start with `$` or `@`, or begin like `Fake…`.
#[test]
fn values_that_merely_start_like_placeholders_are_secrets() {
    for (text, secret) in [
        ("password = '$3cr3tPa55word'", "3cr3tPa55"),
        ("DB_PASSWORD=\"$ecr3t!Pa55\"", "ecr3t!Pa55"),
        ("password: \"@dm1nP4ss\"", "dm1nP4ss"),
        ("password: FakePassw0rd!", "FakePassw0rd"),
        ("api_token = \"fake_9fK2xL0qP7wR4tY8uI3o\"", "9fK2xL0qP7wR4"),
        ("secret: example-Zq81mNx0PqL2vR7s", "Zq81mNx0PqL2"),
    ] {
        assert_gone(text, text, secret, "");
    }
    for kept in [
        "password = \"${DB_PASSWORD}\"",
        "password: $DB_PASSWORD",
        "export TOKEN=$(cat /run/secrets/token)",
        "api_key: <your-token>",
        "password = 'xxx'",
        "password: changeme",
        "password = $config['db_password'];",
        "token: your-api-token-here",
    ] {
        assert_kept(kept);
    }
}

/// A quoted passphrase of plain words after a password name is a secret; a message about a
/// password is not.
#[test]
fn quoted_passphrases_are_secrets() {
    for (text, secret) in [
        ("password = \"correct horse battery staple\"", "horse battery"),
        ("GPG_PASSPHRASE='purple monkey dishwasher'", "monkey dish"),
        ("\"passphrase\": \"river lamp 42 tiger\"", "lamp 42"),
    ] {
        assert_gone(text, text, secret, "");
    }
    for kept in [
        "password: \"Must be at least 8 characters\"",
        "\"password\": \"Enter your password\"",
        "\"resetPassword\": \"Reset Password Link\"",
        "password_hint = \"the name of your first pet\"",
    ] {
        assert_kept(kept);
    }
}

/// A JSON string holding JSON holding JSON: the innermost password is found, and the line stays
/// valid JSON.
#[test]
fn json_nested_two_levels_deep_is_scanned() {
    let inner = serde_json::json!({"password": "deepPw-81x", "user": "u"}).to_string();
    let middle = serde_json::json!({"body": inner}).to_string();
    let outer = serde_json::json!({"response": middle}).to_string();
    // As a tool result (three levels: the line, the result, the response) and as a line.
    for line in [in_json(&outer), outer.clone(), in_json(&middle)] {
        let out = redact(&line);
        assert!(
            !out.contains("deepPw-81x") && out.contains("user"),
            "{line} -> {out}"
        );
        serde_json::from_str::<serde_json::Value>(&out).expect("valid JSON");
        assert_eq!(redact(&out), out);
    }
}

/// `az storage account keys list`: keys listed under `value` beside `keyName`, with no credential
/// name, in JSON, table and tsv output.
#[test]
fn azure_storage_key_listings_are_redacted() {
    let key = "BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRg==";
    assert_eq!(key.len(), 88);
    let json = format!("[\n  {{\n    \"creationTime\": \"2026-01-02T03:04:05+00:00\",\n    \"keyName\": \"key1\",\n    \"permissions\": \"FULL\",\n    \"value\": \"{key}\"\n  }}\n]");
    let table = format!(
        "KeyName    Permissions    Value\n---------  -------------  -----\nkey1       FULL           {key}"
    );
    let tsv = format!("2026-01-02T03:04:05+00:00\tkey1\tFULL\t{key}");
    for text in [&json, &table, &tsv] {
        assert_gone("az keys list", text, &key[..40], "key1");
    }
    // One line of the JSON alone, as `kcap redact` would see it.
    assert_gone(
        "value line",
        &format!("    \"value\": \"{key}\""),
        &key[..40],
        "\"value\"",
    );
    // A lock file's integrity hash has the same length but a prefix.
    assert_kept(&format!("\"integrity\": \"sha512-{}\", \"key1\": 1", &key[..86]));
}

/// Markdown tables and prose: `| password | hunter2-x |`, `the password is Tr0ub4dor&3`.
#[test]
fn table_cells_and_prose_are_redacted() {
    for (text, secret, keep) in [
        ("| password | hunter2-x |", "hunter2-x", "| password |"),
        ("|DB_PASSWORD|Pg-81-pass|", "Pg-81-pass", "|DB_PASSWORD|"),
        ("the password is Tr0ub4dor&3", "Tr0ub4dor&3", "the password is"),
        (
            "The API token was Zx8Qw2Er5Ty7Ui9Op1As.",
            "Zx8Qw2Er5Ty7",
            "token was",
        ),
        ("my pin is 48213907", "48213907", "my pin is"),
    ] {
        assert_gone(text, text, secret, keep);
    }
    for kept in [
        "| password | string | The user's password |",
        "| password | Yes | required |",
        "the password is incorrect.",
        "the token is expired",
        "If the password is 12 characters long",
        "the key is `sort_key`",
    ] {
        assert_kept(kept);
    }
}

/// A finding in a JSON document held in a string does not end halfway through one of that
/// document's escapes: `mysql -p\"` cut after the backslash would end its string early.
#[test]
fn a_finding_does_not_cut_an_escape_of_a_nested_document_in_half() {
    // And only the nested document's strings are decoded, not the document itself: read as a
    // whole, `"u:p@\\"` would become a string whose closing quote is escaped.
    for cmd in ["mysql -p\"", "u:p@\\"] {
        let inner = serde_json::json!({"cmd": cmd, "password": cmd, "n": 1}).to_string();
        let line = in_json(&inner);
        let out = content(&redact(&line));
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("nested JSON broke ({e}): {out}"));
        assert_eq!(v["n"], 1, "{out}");
    }
}
