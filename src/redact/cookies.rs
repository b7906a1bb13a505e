//! A Netscape cookie jar line (curl's `-c` / `-b` file, browser exports): seven tab-separated
//! fields, `domain  TRUE|FALSE  path  TRUE|FALSE  expiry  name  value`. No `name=` stands
//! before the value, so the named rules never see it; a random-looking value is a session.

use super::scan::{Hit, Rule};
use super::value::{is_secret, Strength};

/// Longest line read as a jar line: longer is no cookie jar's.
const MAX_LINE: usize = 8192;

/// The value of the cookie jar line around `at` (a `\tTRUE\t/` or `\tFALSE\t/` occurrence),
/// and where that line ends: later occurrences before it are on a line already judged (one
/// jar entry a line), so the caller skips them. Each line is then looked at once, over at
/// most [`MAX_LINE`] bytes either side, which keeps a line of these flags back to back linear.
pub(crate) fn value(text: &str, at: usize) -> (Option<Hit>, usize) {
    let b = text.as_bytes();
    let from = at.saturating_sub(MAX_LINE);
    let start = match memchr::memrchr(b'\n', &b[from..at]) {
        Some(i) => from + i + 1,
        None if from == 0 => 0,
        // A line longer than any jar line: skip to its end (found once, by memchr).
        None => return (None, line_end(b, at)),
    };
    let len = b[start..]
        .iter()
        .take(MAX_LINE)
        .take_while(|c| **c != b'\n' && **c != b'\r')
        .count();
    let end = start + len;
    if len == MAX_LINE {
        return (None, line_end(b, end));
    }
    (jar_value(text, start, end), end)
}

/// Where the line holding `p` ends.
fn line_end(b: &[u8], p: usize) -> usize {
    memchr::memchr(b'\n', &b[p..]).map_or(b.len(), |i| p + i)
}

/// The value field of the line `[start, end)` if it is a jar line with a random value.
fn jar_value(text: &str, start: usize, end: usize) -> Option<Hit> {
    let line = &text[start..end];
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
        let (h, until) = value(t, t.find("\tTRUE\t/").unwrap());
        let h = h.unwrap();
        assert_eq!(&t[h.start..h.end], "q8ZtR3nV7mK2pL9xW4bC6dF1");
        assert_eq!(until, h.end, "the rest of the line is judged");
        let kept = "example.com\tTRUE\t/\tFALSE\t0\tlang\ten-US";
        assert!(value(kept, kept.find("\tTRUE\t/").unwrap()).0.is_none());
        let other = "a\tTRUE\t/\tb";
        assert!(value(other, 1).0.is_none());
    }

    #[test]
    fn a_long_line_is_skipped_to_its_end() {
        let long = format!("{}\nnext", "\tTRUE\t/".repeat(3000));
        let (hit, until) = value(&long, 20_000);
        assert!(hit.is_none());
        assert_eq!(until, long.find('\n').unwrap());
        let (hit, until) = value(&long, 7);
        assert!(hit.is_none());
        assert_eq!(until, long.find('\n').unwrap());
    }
}
