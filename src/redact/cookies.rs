//! A Netscape cookie jar line (curl's `-c` / `-b` file, browser exports): seven tab-separated
//! fields, `domain  TRUE|FALSE  path  TRUE|FALSE  expiry  name  value`. No `name=` stands
//! before the value, so the named rules never see it; a random-looking value is a session.

use super::scan::{Hit, Rule};
use super::value::{is_secret, Strength};

/// The value of the cookie jar line around `at` (a `\tTRUE\t/` or `\tFALSE\t/` occurrence).
pub(crate) fn value(text: &str, at: usize) -> Option<Hit> {
    let b = text.as_bytes();
    let start = memchr::memrchr(b'\n', &b[..at]).map_or(0, |i| i + 1);
    // A line is short; a long one is no cookie jar's (and this keeps the scan linear).
    let len = b[start..]
        .iter()
        .take(8192)
        .take_while(|c| **c != b'\n' && **c != b'\r')
        .count();
    let line = &text[start..start + len];
    let fields: Vec<&str> = line.split('\t').collect();
    let flag = |f: &str| f.eq_ignore_ascii_case("true") || f.eq_ignore_ascii_case("false");
    if fields.len() != 7
        || !flag(fields[1])
        || !flag(fields[3])
        || !fields[4].bytes().all(|c| c.is_ascii_digit())
        || !is_secret(fields[6], Strength::Weak, false)
    {
        return None;
    }
    let end = start + len;
    Some(Hit {
        start: end - fields[6].len(),
        end,
        rule: Rule::Builtin("cookie-jar-value"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_field_of_a_jar_line() {
        let t = "x\n.example.com\tTRUE\t/\tTRUE\t0\tsid\tq8ZtR3nV7mK2pL9xW4bC6dF1\ny";
        let h = value(t, t.find("\tTRUE\t/").unwrap()).unwrap();
        assert_eq!(&t[h.start..h.end], "q8ZtR3nV7mK2pL9xW4bC6dF1");
        let kept = "example.com\tTRUE\t/\tFALSE\t0\tlang\ten-US";
        assert!(value(kept, kept.find("\tTRUE\t/").unwrap()).is_none());
        let other = "a\tTRUE\t/\tb";
        assert!(value(other, 1).is_none());
    }
}
