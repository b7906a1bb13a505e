//! Private key blocks: `-----BEGIN <LABEL> PRIVATE KEY-----` (PEM: RSA, EC, DSA, OPENSSH,
//! ENCRYPTED, PKCS#8) and `-----BEGIN PGP PRIVATE KEY BLOCK-----`, through the matching END
//! marker, or through its last key line when the block is cut off (a truncated key still
//! leaks). A header with no key line after it is code or prose, not a key.

const BEGIN: &[u8] = b"-----BEGIN ";
const END: &[u8] = b"-----END ";

/// If a private key block starts at `at` (a case-insensitive `-----begin` occurrence), its end.
pub(crate) fn block_end(b: &[u8], at: usize) -> Option<usize> {
    if !b[at..].starts_with(BEGIN) {
        return None;
    }
    let label_start = at + BEGIN.len();
    let window = &b[label_start..b.len().min(label_start + 100)];
    let header_end = label_start + memchr::memmem::find(window, b"-----")?;
    let label = &b[label_start..header_end];
    if !label
        .iter()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || matches!(c, b' ' | b'_' | b'-'))
        || !(label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK"))
    {
        return None;
    }
    body_end(b, header_end + 5)
}

/// Where the block whose header ends at `body` ends: through its END marker when only key lines
/// lead there, else after its last key line (a truncated key still leaks). A header with no key
/// line after it (`"-----BEGIN RSA PRIVATE KEY-----";` as a constant in code) is no block: code
/// after it must not be swallowed to the end of the text.
fn body_end(b: &[u8], body: usize) -> Option<usize> {
    let mut last_key_line = None;
    let mut p = body;
    loop {
        let line_end = p + b[p..]
            .iter()
            .position(|c| matches!(c, b'\n' | b'\r' | b'\\'))
            .unwrap_or(b.len() - p);
        let line = &b[p..line_end];
        if let Some(e) = memchr::memmem::find(line, END) {
            if is_key_line(&line[..e]) {
                return Some(end_marker_end(b, p + e));
            }
        }
        if !is_key_line(line) {
            break;
        }
        if line.iter().any(|c| !c.is_ascii_whitespace()) {
            last_key_line = Some(line_end);
        }
        // Past the line break: a real one, or `\n` / `\r` in text that is still JSON-encoded.
        p = match b.get(line_end..) {
            Some([b'\r', b'\n', ..]) => line_end + 2,
            Some([b'\n' | b'\r', ..]) => line_end + 1,
            Some([b'\\', b'n' | b'r', ..]) => line_end + 2,
            _ => break,
        };
        // A key file shown by a viewer has a line number before each line (`cat -n`, bat).
        p += super::view::gutter(&b[p..]);
    }
    last_key_line
}

/// Base64 (blanks allowed, for keys pasted on one line) or an RFC 1421 header (`Proc-Type:`,
/// `DEK-Info:`, PGP's `Comment:`): what a key block's lines hold. A marker left by an earlier
/// pass stands for key text. Words with blanks between them are key text only with a long
/// base64 run among them (a pasted key's 64-column chunks), not prose (`machine h login u`).
fn is_key_line(line: &[u8]) -> bool {
    let marker = super::REDACTED.as_bytes();
    let mut rest = line;
    let mut base64 = true;
    let (mut words, mut longest) = (0, 0);
    while !rest.is_empty() {
        let (piece, next) = match memchr::memmem::find(rest, marker) {
            Some(m) => (&rest[..m], &rest[m + marker.len()..]),
            None => (rest, &rest[rest.len()..]),
        };
        base64 &= piece
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b' ' | b'\t'));
        for word in piece
            .split(|c| matches!(c, b' ' | b'\t'))
            .filter(|w| !w.is_empty())
        {
            words += 1;
            longest = longest.max(word.len());
        }
        rest = next;
    }
    base64 &= words < 2 || longest >= 16;
    let header = memchr::memchr(b':', line).is_some_and(|colon| {
        colon > 0
            && line[..colon]
                .iter()
                .all(|c| c.is_ascii_alphabetic() || *c == b'-')
    });
    base64 || header
}

/// The end of the END marker starting at `at`.
fn end_marker_end(b: &[u8], at: usize) -> usize {
    let end_label = at + END.len();
    let mut tail = b[end_label..]
        .iter()
        .take(110)
        .take_while(|c| **c != b'\n')
        .count();
    // The 110-byte cap may fall inside a character; the marker ends before it.
    while b.get(end_label + tail).is_some_and(|c| c & 0xC0 == 0x80) {
        tail -= 1;
    }
    match memchr::memmem::find(&b[end_label..end_label + tail], b"-----") {
        Some(q) => end_label + q + 5,
        None => end_label + tail,
    }
}

/// A PuTTY private key file (`PuTTY-User-Key-File-3: …`): its `Private-Lines: N` header at
/// `at` is followed by N lines of base64 that hold the key. The range covers those lines (in
/// real or still JSON-encoded line breaks), at most 64 of them; the public lines and the MAC
/// stay.
pub(crate) fn putty_private_end(b: &[u8], at: usize) -> Option<usize> {
    let mut p = at + b"private-lines:".len();
    while b.get(p) == Some(&b' ') {
        p += 1;
    }
    let digits = b[p..].iter().take(3).take_while(|c| c.is_ascii_digit()).count();
    let n: usize = std::str::from_utf8(&b[p..p + digits]).ok()?.parse().ok()?;
    p += digits;
    let (mut end, mut lines) = (None, 0);
    while lines < n.min(64) {
        p = match b.get(p..) {
            Some([b'\r', b'\n', ..]) => p + 2,
            Some([b'\n' | b'\r', ..]) => p + 1,
            Some([b'\\', b'n', ..]) => p + 2,
            Some([b'\\', b'r', b'\\', b'n', ..]) => p + 4,
            _ => break,
        };
        // A key file shown by a `view` tool has a line number before each line.
        p += super::view::gutter(&b[p..]);
        let len = b[p..]
            .iter()
            .take(128)
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
            .count();
        if len == 0 {
            break;
        }
        p += len;
        end = Some(p);
        lines += 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn putty_private_lines_are_the_key() {
        let k = "PuTTY-User-Key-File-3: ssh-ed25519\nPublic-Lines: 2\nAAAAC3Nz\nAAAAIB\nPrivate-Lines: 1\nAAAAIGq8ZtR3nV7m\nPrivate-MAC: 12ab";
        let at = k.find("Private-Lines").unwrap();
        let end = putty_private_end(k.as_bytes(), at).unwrap();
        assert!(k[..end].ends_with("AAAAIGq8ZtR3nV7m"), "{}", &k[..end]);
        let escaped = r"Private-Lines: 2\nAAAA1\r\nBBBB2\nPrivate-MAC: 12";
        let end = putty_private_end(escaped.as_bytes(), 0).unwrap();
        assert!(escaped[..end].ends_with("BBBB2"));
        assert_eq!(putty_private_end(b"Private-Lines: 1\n\n", 0), None);
        assert_eq!(putty_private_end(b"Private-Lines: x\nAAAA", 0), None);
    }

    #[test]
    fn blocks_end_at_their_end_marker_or_the_text() {
        let k = "x -----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\nafter";
        let at = k.find("-----BEGIN").unwrap();
        assert_eq!(
            &k[at..block_end(k.as_bytes(), at).unwrap()],
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"
        );
        let pgp = "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF\n";
        assert_eq!(block_end(pgp.as_bytes(), 0), Some(pgp.len() - 1));
        let escaped = r"-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\nafter";
        assert_eq!(block_end(escaped.as_bytes(), 0), Some(escaped.len() - 7));
        for not_key in [
            "-----BEGIN CERTIFICATE-----\nMII",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\nx",
            "-----BEGIN PUBLIC KEY-----",
        ] {
            assert_eq!(block_end(not_key.as_bytes(), 0), None, "{not_key}");
        }
    }

    #[test]
    fn an_end_marker_cut_at_its_cap_ends_on_a_character() {
        let k = format!(
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END x{}",
            "é".repeat(80)
        );
        let end = block_end(k.as_bytes(), 0).unwrap();
        assert!(k.is_char_boundary(end), "{end}");
        assert!(end > k.find("-----END").unwrap() + 100, "{end}");
    }

    #[test]
    fn a_header_without_key_lines_is_no_block() {
        let code = "const HEADER: &str = \"-----BEGIN RSA PRIVATE KEY-----\";\nfn parse() {}\n";
        let at = code.find("-----BEGIN").unwrap();
        assert_eq!(block_end(code.as_bytes(), at), None);
        // Key lines, then code: the block ends after the last key line.
        let cut = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIB\n\";\nlet x = 1;";
        assert_eq!(block_end(cut.as_bytes(), 0), cut.find("\n\";"));
    }

    #[test]
    fn words_are_key_text_only_next_to_a_long_base64_run() {
        let prose = "-----BEGIN RSA PRIVATE KEY-----machine h login u password [REDACTED]";
        assert_eq!(block_end(prose.as_bytes(), 0), None);
        let pasted = "-----BEGIN RSA PRIVATE KEY----- MIIEpAIBAAKCAQEAx9Qk2L7mN0pR5tV8 wY1zB3cE6fH9jK2 -----END RSA PRIVATE KEY-----";
        assert_eq!(block_end(pasted.as_bytes(), 0), Some(pasted.len()));
    }
}
