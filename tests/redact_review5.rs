//! Leaks found by a black-box attack on redaction (round 5), as named cases: each secret must
//! be gone in plain text and inside a JSON line of tool output alike, and each look-alike that
//! is no secret must come through unchanged.

#[path = "common/redaction.rs"]
mod redaction;
use redaction::{assert_gone, assert_kept, content, in_json, redact};

#[test]
fn passwords_given_as_positional_or_attached_arguments() {
    for (case, text, keep) in [
        (
            "sshpass attached",
            "sshpass -pS3cretPw9 ssh deploy@web1",
            "ssh deploy@web1",
        ),
        (
            "sshpass quoted",
            "sshpass -p 'S3cretPw9' scp f host:",
            "scp f host:",
        ),
        (
            "echo into sudo -S",
            "echo S3cretPw9 | sudo -S apt-get install -y nginx",
            "sudo -S apt-get",
        ),
        (
            "echo quoted into sudo -S",
            "echo \"S3cretPw9\" | sudo -S systemctl restart x",
            "sudo -S",
        ),
        (
            "printf into sudo --stdin",
            "printf '%s\\n' 'S3cretPw9' | sudo --stdin id",
            "sudo --stdin",
        ),
        ("here-string", "sudo -S whoami <<< 'S3cretPw9'", "sudo -S whoami"),
        (
            "htpasswd batch",
            "htpasswd -b /etc/nginx/.htpasswd admin S3cretPw9",
            "admin",
        ),
        (
            "htpasswd batch create",
            "htpasswd -bcB .htpasswd admin S3cretPw9",
            "admin",
        ),
        ("redis-cli -a", "redis-cli -h cache -a S3cretPw9 ping", "ping"),
        (
            "mongosh -p",
            "mongosh -u admin -p S3cretPw9 --authenticationDatabase admin",
            "-u admin",
        ),
        (
            "smbclient user%pass",
            "smbclient //nas/share -U bob%S3cretPw9",
            "bob%",
        ),
        (
            "requests auth tuple",
            "r = requests.get(url, auth=(\"deploy\", \"S3cretPw9\"))",
            "deploy",
        ),
        (
            "httpx auth tuple, single quotes",
            "httpx.post(u, auth=('deploy', 'S3cretPw9'), json=x)",
            "deploy",
        ),
        (
            "HTTPBasicAuth",
            "auth = HTTPBasicAuth(\"deploy\", \"S3cretPw9\")",
            "deploy",
        ),
    ] {
        assert_gone(case, text, "S3cretPw9", keep);
    }
    for kept in [
        "cat notes.txt | sudo -S tee /etc/motd",
        "echo hello | sudo tee /etc/motd",
        "echo $SUDO_PASSWORD | sudo -S ls",
        "htpasswd -c .htpasswd admin",
        "sshpass -f pw.txt ssh -p 2222 deploy@web1",
        "docker run -p 27017:27017 mongo:7",
        "requests.get(url, auth=auth, timeout=5)",
        "auth = HTTPBasicAuth(user, password)",
    ] {
        assert_kept(kept);
    }
}

#[test]
fn quoted_passphrases_and_single_quoted_expect_prompts() {
    for (case, text, secret, keep) in [
        (
            "capitalised passphrase",
            "PASSWORD='Correct Horse Battery Staple'",
            "Horse Battery",
            "PASSWORD=",
        ),
        (
            "passphrase with a symbol",
            "export DB_PASSWORD=\"correct horse battery staple 42!\"",
            "horse battery",
            "DB_PASSWORD",
        ),
        (
            "expect one line, single quotes",
            "expect -c \"spawn ssh h; expect 'password:' ; send 'S3cretPw9\\r'\"",
            "S3cretPw9",
            "send '",
        ),
        (
            "expect two lines, single quotes",
            "expect 'Password:'\nsend 'S3cretPw9\\r'",
            "S3cretPw9",
            "send '",
        ),
    ] {
        assert_gone(case, text, secret, keep);
    }
    for kept in [
        "PASSWORD_HINT=\"Use at least 12 characters\"",
        "password: \"Please enter a value.\"",
        "expect 'login:'\nsend 'deploy\\r'",
    ] {
        assert_kept(kept);
    }
}

#[test]
fn random_values_assigned_to_any_name() {
    for (case, text, secret, keep) in [
        (
            ".env with an unknown name",
            "DEBUG=1\nFLUX_CAPACITOR=q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE\nPORT=8080",
            "q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE",
            "PORT=8080",
        ),
        (
            "YAML with an unknown name",
            "settings:\n  flux: \"q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE\"\n",
            "q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE",
            "flux:",
        ),
        (
            "Service Bus connection string",
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE+abcdEFGH=",
            "q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE",
            "SharedAccessKeyName=RootManageSharedAccessKey",
        ),
        (
            "AccessKey",
            "AccessKey=Zm9vYmFyQmF6UXV4MTIzNDU2Nzg5MEFCQ0RFRg==",
            "Zm9vYmFyQmF6UXV4MTIzNDU2Nzg5MEFCQ0RFRg",
            "AccessKey=",
        ),
    ] {
        assert_gone(case, text, secret, keep);
    }
    for kept in [
        "commit_sha=9f8e7d6c5b4a39f8e7d6c5b4a39f8e7d6c5b4a3f",
        "  integrity: sha512-q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aEq8ZtR3nV7mK2pL9x==",
        "golang.org/x/net v0.1.0 h1:q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE=",
        "handler=getUserAccountById2FactorAuthToken",
        "request_id: q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE",
        "tool_call: toolu_01Q8ZtR3nV7mK2pL9xW4bC6dF1",
        "image=registry.example.com/team/app:v1.2.3",
    ] {
        assert_kept(kept);
    }
}

#[test]
fn session_cookies_and_ids() {
    let sid = "q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE";
    for (case, text) in [
        (
            "sessionid in a cookie header",
            format!("Cookie: _ga=GA1.2.3; sessionid={sid}; csrftoken=x"),
        ),
        ("bare sessionid", format!("sessionid={sid}")),
        (
            "JSESSIONID",
            format!("Set-Cookie: JSESSIONID={sid}; Path=/; HttpOnly"),
        ),
        ("PHPSESSID", format!("PHPSESSID={sid}")),
        (
            "curl -b session",
            format!("curl -b \"session={sid}\" https://x.io/"),
        ),
    ] {
        assert_gone(case, &text, sid, "");
    }
    for kept in [
        r#"{"sessionId":"0faecbdf-b889-4bca-a51a-5254f5488cb6"}"#,
        "session_count=3",
        "session = requests.Session()",
    ] {
        assert_kept(kept);
    }
}

#[test]
fn cloud_keys_in_urls_and_after_their_id() {
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ8kLmN0pQ";
    assert_gone(
        "URL password with slashes",
        &format!("rclone copy s3://bob:{secret}@minio.local/bucket ."),
        secret,
        "@minio.local/bucket",
    );
    assert_gone(
        "secret far after its key id",
        &format!("aws_access_key_id = AKIAQ3EGUMZ5EXAMPLE2 and, after a long aside of prose, the secret is {secret}"),
        secret,
        "aws_access_key_id",
    );
    for kept in [
        "see https://host:8443/docs/a@b for details",
        "https://github.com/org/repo/blob/main/x@y.md",
    ] {
        assert_kept(kept);
    }
}

#[test]
fn putty_keys_and_kubernetes_secrets() {
    let putty = "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: me\nPublic-Lines: 2\nAAAAC3NzaC1lZDI1NTE5AAAAIB\nq8ZtR3nV\nPrivate-Lines: 1\nAAAAIGq8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aEq8ZtR3nV7mK\nPrivate-MAC: 1234abcdef\n";
    assert_gone(
        "PuTTY key",
        putty,
        "AAAAIGq8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE",
        "Private-MAC",
    );
    let yaml = "apiVersion: v1\ndata:\n  database-url: cG9zdGdyZXM6Ly91c2VyOnBhc3NAaG9zdC9kYg==\n  username: Ym9i\nkind: Secret\nmetadata:\n  name: db\ntype: Opaque\n";
    assert_gone(
        "kubectl get secret -o yaml",
        yaml,
        "cG9zdGdyZXM6Ly91c2VyOnBhc3NAaG9zdC9kYg",
        "name: db",
    );
    let json = "{\n    \"apiVersion\": \"v1\",\n    \"data\": {\n        \"database-url\": \"cG9zdGdyZXM6Ly91c2VyOnBhc3NAaG9zdC9kYg==\"\n    },\n    \"kind\": \"Secret\"\n}";
    // As a tool prints it (a line of kcap's input that is itself this document is scanned
    // string by string, and no string of it says `kind: Secret`).
    let out = content(&redact(&in_json(json)));
    assert!(
        !out.contains("cG9zdGdyZXM6Ly91c2VyOnBhc3NAaG9zdC9kYg") && out.contains("\"kind\": \"Secret\""),
        "kubectl get secret -o json: {out}"
    );
    for kept in [
        "apiVersion: v1\ndata:\n  log-level: ZGVidWc=\nkind: ConfigMap\n",
        "Public-Lines: 2\nAAAAC3NzaC1lZDI1NTE5AAAAIB\nq8ZtR3nV\n",
    ] {
        assert_kept(kept);
    }
}

/// A command keyword (`htpasswd`, `sshpass`) once hid the name word inside it: these variables
/// leaked (`HTPASSWD=` was caught before `htpasswd` became a command keyword).
#[test]
fn variables_named_after_a_command_are_still_names() {
    for (case, text, secret) in [
        ("HTPASSWD", "HTPASSWD=S3cretPw9x make deploy", "S3cretPw9x"),
        (
            "SSHPASS for sshpass -e",
            "SSHPASS='Zx9Qw2Er5Ty7' sshpass -e ssh deploy@web1",
            "Zx9Qw2Er5Ty7",
        ),
    ] {
        assert_gone(case, text, secret, "=");
    }
}
