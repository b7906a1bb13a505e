//! A random-looking value assigned to any name (`FLUX_CAPACITOR=q8ZtR3nV7mK2…`): a `.env`
//! line whose name no rule knows still holds a credential when its value is long, dense and
//! mixes upper case, lower case and digits the way generated keys do.
//!
//! Thresholds (tuned on real source code, where long mixed-case literals are mostly
//! identifiers, hashes and ids): at least [`MIN_LEN`] bytes of base64/base64url, all three
//! character classes with at least two of each, Shannon entropy ≥ [`MIN_ENTROPY`] bits per
//! byte, and at most half of its letters in lower-case runs of three or more (`camelCase`
//! identifiers are made of those; random text rarely is). Names that describe a hash, an id or
//! a digest, SRI and `h1:` hashes, and ids with a word prefix (`toolu_…`, `chatcmpl-…`) stay.
//!
//! Linear: each `=` or `: ` is looked at once, and the run after it stops at the first byte
//! outside the alphabet, so runs after different separators do not overlap.

use super::scan::{Hit, Rule};
use super::value::entropy;

/// Shortest value considered.
const MIN_LEN: usize = 24;
/// Longest run read (a longer run is no `.env` value but a blob).
const MAX_LEN: usize = 1024;
const MIN_ENTROPY: f64 = 4.0;

/// Last name parts that say the value is a hash, an id or another non-secret.
const NOT_SECRET: &[&str] = &[
    "hash",
    "sha",
    "sha1",
    "sha256",
    "sha512",
    "md5",
    "digest",
    "checksum",
    "integrity",
    "etag",
    "id",
    "ids",
    "uuid",
    "guid",
    "commit",
    "rev",
    "revision",
    "oid",
    "nonce",
    "salt",
    "iv",
    "name",
    "path",
    "url",
    "uri",
    "href",
    "src",
    "file",
    "image",
    "version",
    "tag",
    "ref",
    "fingerprint",
    "thumbprint",
    "hmac",
    "sum",
    "crc",
    "class",
    "classname",
    "type",
    "kind",
    "key_id",
    "keyid",
    "pubkey",
    "publickey",
    "public",
    "cert",
    "certificate",
    "crt",
    "ca",
];

fn in_alphabet(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_')
}

/// Appends the random-looking values assigned in `text` to `out`.
pub(crate) fn scan(text: &str, out: &mut Vec<Hit>) {
    let b = text.as_bytes();
    if b.len() < MIN_LEN + 2 {
        return;
    }
    for at in memchr::memchr2_iter(b'=', b':', b) {
        let sep_end = match b[at] {
            // `NAME=v`, `NAME = "v"`; not `==`, `!=`, `<=`, `>=`, `=>`.
            b'=' => {
                if at > 0 && matches!(b[at - 1], b'=' | b'!' | b'<' | b'>')
                    || matches!(b.get(at + 1), Some(b'=' | b'>'))
                {
                    continue;
                }
                at + 1
            }
            // `name: v` (YAML, JSON): a blank after the colon, so `h1:…`, `sha256:…` and URLs
            // stay.
            _ => {
                if b.get(at + 1) != Some(&b' ') {
                    continue;
                }
                at + 2
            }
        };
        let mut s = sep_end;
        while b.get(s) == Some(&b' ') && s - sep_end < 8 {
            s += 1;
        }
        let quote = b.get(s).copied().filter(|c| matches!(c, b'"' | b'\''));
        s += usize::from(quote.is_some());
        let judged = b[s..]
            .iter()
            .take(MAX_LEN)
            .take_while(|c| in_alphabet(**c))
            .count();
        // Most separators are followed by a short word: the cheap test goes first.
        if judged < MIN_LEN {
            continue;
        }
        // A value longer than what is judged is redacted whole. No separator lies inside the
        // run, so runs after different separators never overlap and this stays linear.
        let run = if judged == MAX_LEN {
            judged + b[s + judged..].iter().take_while(|c| in_alphabet(**c)).count()
        } else {
            judged
        };
        let mut e = s + run;
        while b.get(e) == Some(&b'=') && e - (s + run) < 3 {
            e += 1;
        }
        // The value must end here: a closing quote, a blank, a list separator or the end.
        let ends = match quote {
            Some(q) => b.get(e) == Some(&q),
            None => b.get(e).is_none_or(|c| {
                c.is_ascii_whitespace() || matches!(c, b';' | b',' | b'&' | b'\\' | b')' | b'}')
            }),
        };
        let named = || name_before(b, at).is_some_and(|(ns, ne)| secret_name(&text[ns..ne]));
        if ends && random_value(&b[s..(s + judged).min(e)]) && named() {
            out.push(Hit {
                start: s,
                end: e,
                rule: Rule::Builtin("generic-high-entropy-assignment"),
            });
        }
    }
}

/// The name before the separator at `at` (blanks and a closing quote allowed between).
fn name_before(b: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut e = at;
    while e > 0 && at - e < 8 && b[e - 1] == b' ' {
        e -= 1;
    }
    if e > 0 && matches!(b[e - 1], b'"' | b'\'') {
        e -= 1;
    }
    let is_name = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.');
    let len = b[..e].iter().rev().take(64).take_while(|c| is_name(**c)).count();
    (len >= 3).then_some((e - len, e))
}

/// Whether the name may hold a credential: not one that describes a hash, an id or a file.
fn secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    // A numbered name's word is before its number (`x-amz-id-2` is an id).
    let last = lower
        .rsplit(|c: char| !c.is_ascii_alphanumeric())
        .find(|p| !p.is_empty() && !p.bytes().all(|c| c.is_ascii_digit()))
        .unwrap_or("");
    // camelCase: the last capitalised word (`commitSha` → `sha`).
    let camel = name
        .rfind(|c: char| c.is_ascii_uppercase())
        .map(|i| name[i..].to_ascii_lowercase())
        .unwrap_or_default();
    !NOT_SECRET.contains(&last) && !NOT_SECRET.contains(&camel.as_str())
}

/// Dense, mixed-class text that reads neither as words, an identifier nor an id.
fn random_value(v: &[u8]) -> bool {
    if v.len() < MIN_LEN {
        return false;
    }
    let count = |f: fn(&u8) -> bool| v.iter().filter(|c| f(c)).count();
    if count(u8::is_ascii_lowercase) < 2 || count(u8::is_ascii_uppercase) < 2 || count(u8::is_ascii_digit) < 2
    {
        return false;
    }
    // `toolu_01…`, `chatcmpl-…`, `sha512-…`: a word prefix names an id or a hash format.
    if let Some(sep) = v.iter().position(|c| matches!(c, b'-' | b'_')) {
        if sep <= 12
            && v[..sep]
                .iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return false;
        }
    }
    if super::value::has_sequence(v) || super::value::encodes_text(v) {
        return false;
    }
    // A path (`src/main/java/…`) or a run of words joined by separators.
    if v.iter().filter(|c| matches!(c, b'/' | b'-' | b'_')).count() * 8 > v.len() {
        return false;
    }
    // Lower-case runs of three or more make up identifiers (`getUserById2`), not keys.
    let mut in_runs = 0;
    let mut run = 0;
    for &c in v.iter().chain(std::iter::once(&b' ')) {
        if c.is_ascii_lowercase() {
            run += 1;
        } else {
            if run >= 3 {
                in_runs += run;
            }
            run = 0;
        }
    }
    in_runs * 2 <= count(u8::is_ascii_alphabetic) && entropy(v) >= MIN_ENTROPY
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        scan(text, &mut out);
        out.iter().map(|h| &text[h.start..h.end]).collect()
    }

    #[test]
    fn random_values_after_any_name() {
        for (text, want) in [
            (
                "FLUX_CAPACITOR=q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE",
                "q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE",
            ),
            (
                "flux: \"q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE\"",
                "q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE",
            ),
            (
                "X_VAL = 'Zm9vYmFyQmF6UXV4MTIzNDU2Nzg5MEFCQ0RFRg=='",
                "Zm9vYmFyQmF6UXV4MTIzNDU2Nzg5MEFCQ0RFRg==",
            ),
        ] {
            assert_eq!(found(text), vec![want], "{text}");
        }
        for kept in [
            "commit_sha=9f8e7d6c5b4a39f8e7d6c5b4a39f8e7d6c5b4a3f",
            "integrity: sha512-q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aEq8ZtR3nV7mK2pL9x",
            "github.com/x/y v1.2.3 h1:q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE=",
            "id: toolu_01Q8ZtR3nV7mK2pL9xW4bC6dF1",
            "handler=getUserAccountById2FactorAuthToken",
            "requestId: \"q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE\"",
            "path=src/main/java/com/Example2/Util3/Thing",
            "short=q8ZtR3nV7mK2",
            "if a == q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE",
        ] {
            assert_eq!(found(kept), Vec::<&str>::new(), "{kept}");
        }
    }
}
