//! Line-number gutters: a file shown by a coding agent's `view` tool has each line behind its
//! number (`12. `), and other viewers print `  12 | `, `12→` or `cat -n`'s `    12\t`. Rules
//! that read a line's indentation (YAML blocks, key files) look past the gutter, or a file
//! viewed this way would hide what the same file printed by `cat` shows.

/// The length of the gutter at the start of `line` (0 when it has none): blanks, 1 to 7
/// digits, then `. `, ` | ` (or `|`), `→` or a tab.
pub(crate) fn gutter(line: &[u8]) -> usize {
    let blanks = line.iter().take(8).take_while(|c| **c == b' ').count();
    let digits = line[blanks..]
        .iter()
        .take(8)
        .take_while(|c| c.is_ascii_digit())
        .count();
    if digits == 0 || digits > 7 {
        return 0;
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
    } else {
        0
    };
    if mark == 0 {
        0
    } else {
        p + mark
    }
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
            ("data:", 0),
            ("1.5 is a number", 0),
            ("2024 was a year", 0),
            ("12345678. x", 0),
        ] {
            assert_eq!(gutter(line.as_bytes()), want, "{line}");
        }
    }
}
