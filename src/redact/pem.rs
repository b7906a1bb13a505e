//! Private key blocks: `-----BEGIN <LABEL> PRIVATE KEY-----` (PEM: RSA, EC, DSA, OPENSSH,
//! ENCRYPTED, PKCS#8) and `-----BEGIN PGP PRIVATE KEY BLOCK-----`, through the matching END
//! marker, or to the end of the text when the block is cut off (a truncated key still leaks).

const BEGIN: &[u8] = b"-----BEGIN ";
const END: &[u8] = b"-----END ";

/// If a private key block starts at `at` (a case-insensitive `-----begin` occurrence), its end.
pub(crate) fn block_end(b: &[u8], at: usize) -> Option<usize> {
    if !b[at..].starts_with(BEGIN) {
        return None;
    }
    let label_start = at + BEGIN.len();
    let label_len = b[label_start..]
        .iter()
        .take(100)
        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || matches!(c, b' ' | b'_' | b'-'))
        .count();
    // The label run swallows the closing dashes; step back to them.
    let mut header_end = label_start + label_len;
    while header_end > label_start && b[header_end - 1] == b'-' {
        header_end -= 1;
    }
    let label = &b[label_start..header_end];
    if !b[header_end..].starts_with(b"-----")
        || !(label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK"))
    {
        return None;
    }
    let body = header_end + 5;
    Some(match memchr::memmem::find(&b[body..], END) {
        Some(p) => {
            let end_label = body + p + END.len();
            let tail = b[end_label..]
                .iter()
                .take(110)
                .take_while(|c| **c != b'\n')
                .count();
            match memchr::memmem::find(&b[end_label..end_label + tail], b"-----") {
                Some(q) => end_label + q + 5,
                None => end_label + tail,
            }
        }
        None => b.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_end_at_their_end_marker_or_the_text() {
        let k = "x -----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\nafter";
        let at = k.find("-----BEGIN").unwrap();
        assert_eq!(
            &k[at..block_end(k.as_bytes(), at).unwrap()],
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"
        );
        let pgp = "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF\n";
        assert_eq!(block_end(pgp.as_bytes(), 0), Some(pgp.len()));
        for not_key in [
            "-----BEGIN CERTIFICATE-----\nMII",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\nx",
            "-----BEGIN PUBLIC KEY-----",
        ] {
            assert_eq!(block_end(not_key.as_bytes(), 0), None, "{not_key}");
        }
    }
}
