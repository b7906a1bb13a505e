//! Line-number gutters: a file shown by a coding agent's `view` tool has each line behind its
//! number (`12. `), and other viewers print `  12 | `, `12→`, bat's `   12   │ ` or `cat -n`'s
//! `    12\t`. Rules
//! that read a line's indentation (YAML blocks, key files) look past the gutter, or a file
//! viewed this way would hide what the same file printed by `cat` shows.

/// The length of the gutter at the start of `line` (0 when it has none): blanks, 1 to 7
/// digits, then `. `, ` | ` (or `|`), `→` or a tab; `grep -n`'s `6:` / `6-`, also behind a
/// file name (`app.yaml:6:`); or a unified diff's `+` / `-` (not `---` / `+++`).
pub(crate) fn gutter(line: &[u8]) -> usize {
    if matches!(line.first(), Some(b'+' | b'-')) && !matches!(line.get(1), Some(b'+' | b'-')) {
        return 1;
    }
    numbered(line).or_else(|| grep_file(line)).unwrap_or(0)
}

/// `grep -n` over files: `path:6:` (or `path-6-` for a context line); the path has no blank.
fn grep_file(line: &[u8]) -> Option<usize> {
    let path = line
        .iter()
        .take(256)
        .take_while(|c| !matches!(c, b':' | b' ' | b'\t' | b'"' | b'\''))
        .count();
    let sep = *line.get(path)?;
    if path == 0 || sep != b':' {
        return None;
    }
    let digits = line[path + 1..]
        .iter()
        .take(8)
        .take_while(|c| c.is_ascii_digit())
        .count();
    let mark = line.get(path + 1 + digits)?;
    ((1..=7).contains(&digits) && matches!(mark, b':' | b'-')).then_some(path + digits + 2)
}

fn numbered(line: &[u8]) -> Option<usize> {
    let blanks = line.iter().take(8).take_while(|c| **c == b' ').count();
    let digits = line[blanks..]
        .iter()
        .take(8)
        .take_while(|c| c.is_ascii_digit())
        .count();
    if digits == 0 || digits > 7 {
        return None;
    }
    let p = blanks + digits;
    let rest = &line[p..];
    let mark = if rest.starts_with(b". ") {
        2
    } else if rest.starts_with(b" | ") {
        3
    } else if rest.starts_with(b" |") || rest.starts_with(b"| ") {
        2
    } else if rest.starts_with(b"|") || rest.starts_with(b"\t") {
        1
    } else if rest.starts_with("→".as_bytes()) {
        "→".len()
    } else if let Some(bar) = bat_bar(rest) {
        bar
    } else if rest.starts_with(b":") || rest.starts_with(b"-") {
        1
    } else {
        0
    };
    (mark > 0).then_some(p + mark)
}

/// bat's gutter after the number: blanks (a no-break space among them too, as some terminals
/// copy it), a bar (`│`, `┃`, or `|` when other tools imitate it), and one blank.
fn bat_bar(rest: &[u8]) -> Option<usize> {
    let nbsp = "\u{a0}".as_bytes();
    let mut blanks = 0;
    while blanks < 16 {
        if rest.get(blanks) == Some(&b' ') {
            blanks += 1;
        } else if rest[blanks..].starts_with(nbsp) {
            blanks += nbsp.len();
        } else {
            break;
        }
    }
    let bar = ["│", "┃", "|"]
        .iter()
        .map(|b| b.as_bytes())
        .find(|b| rest[blanks..].starts_with(b))?;
    Some(blanks + bar.len() + usize::from(rest.get(blanks + bar.len()) == Some(&b' ')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gutters_of_common_viewers() {
        for (line, want) in [
            ("1. data:", 3),
            ("  12 | data:", 7),
            ("  12 |", 6),
            ("    12\tdata:", 7),
            ("12→data:", 5),
            ("   3   │   data:", 11),
            ("  12 │ data:", 9),
            ("   1   | data:", 9),
            ("   1   ┃ data:", 11),
            ("   1  \u{a0}│ data:", 12),
            ("data:", 0),
            ("1.5 is a number", 0),
            ("2024 was a year", 0),
            ("12345678. x", 0),
            ("6:  conn: x", 2),
            ("6-  conn: x", 2),
            ("app.yaml:6:data:", 11),
            ("+  conn: x", 1),
            ("---", 0),
            ("+++ b/x", 0),
            ("kind: Secret", 0),
        ] {
            assert_eq!(gutter(line.as_bytes()), want, "{line}");
        }
    }
}
