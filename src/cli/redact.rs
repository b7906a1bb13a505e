//! `kcap redact`: what would leave the machine. Reads lines on stdin and writes each one
//! redacted on stdout (one line out per line in, line endings kept), or with `--explain`, which
//! rules fired on which line at which byte ranges (never the secret itself).

use std::borrow::Cow;
use std::io::{BufRead, Write};
use std::path::Path;

use crate::redact::{config_path, Redactor, UserRules};

/// Runs the filter from `input` to `output`. `config`: a config file to take user rules from
/// instead of kcap's usual one. Returns how many lines would change.
pub fn run(
    input: impl BufRead,
    mut output: impl Write,
    explain: bool,
    config: Option<&Path>,
) -> Result<u64, String> {
    let path = config.map(Path::to_path_buf).or_else(config_path);
    let user = match &path {
        Some(p) => UserRules::load(p)?,
        None => UserRules::default(),
    };
    let redactor = Redactor::with_rules(user);
    let mut input = input;
    let mut buf = Vec::new();
    let (mut number, mut changed) = (0u64, 0u64);
    let write_err = |e: std::io::Error| format!("cannot write to stdout: {e}");
    loop {
        buf.clear();
        let n = input
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        if n == 0 {
            break;
        }
        number += 1;
        let ending = if buf.ends_with(b"\r\n") {
            2
        } else {
            usize::from(buf.ends_with(b"\n"))
        };
        let body = String::from_utf8_lossy(&buf[..buf.len() - ending]);
        if explain {
            let findings = redactor.findings(&body);
            if !findings.is_empty() {
                changed += 1;
                let list: Vec<String> = findings
                    .iter()
                    .map(|f| format!("{} {}..{}", f.rule, f.start, f.end))
                    .collect();
                writeln!(output, "line {number}: {}", list.join(", ")).map_err(write_err)?;
            }
        } else {
            let redacted = redactor.redact(Cow::Borrowed(&body));
            changed += u64::from(matches!(redacted, Cow::Owned(_)));
            output.write_all(redacted.as_bytes()).map_err(write_err)?;
            output.write_all(&buf[buf.len() - ending..]).map_err(write_err)?;
        }
    }
    if explain {
        writeln!(output, "{changed} of {number} lines would change").map_err(write_err)?;
    }
    output.flush().map_err(write_err)?;
    Ok(changed)
}
