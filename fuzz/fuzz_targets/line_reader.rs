//! The transcript reader and the terminal-line rule against a reference written the obvious way
//! (split the whole input on `\n`). The input is written in two appends with an observation
//! between them, so the incremental tail scan is checked against a fresh one too.
#![no_main]

use std::io::Write;

use kcap::effects::lines::{Limits, LineReader};
use kcap::effects::tail::TailObserver;
use kcap::machine::terminal::{classify, is_blank, LineKind};
use kcap::machine::{Tail, Watermark};
use libfuzzer_sys::fuzz_target;

fn strip_cr(s: &[u8]) -> &[u8] {
    s.strip_suffix(b"\r").unwrap_or(s)
}

/// The last non-blank line, complete or not, decides; its start offset is reported.
fn reference_tail(data: &[u8]) -> Tail {
    let mut start = 0usize;
    let mut last = None;
    for seg in data.split(|b| *b == b'\n') {
        if !is_blank(seg) {
            last = Some((start, seg));
        }
        start += seg.len() + 1;
    }
    match last {
        Some((offset, seg)) if classify(seg) == LineKind::Shutdown => Tail::Shutdown {
            offset: offset as u64,
        },
        _ => Tail::NotYet,
    }
}

/// (number, bytes) of every non-blank line the reader must deliver, and whether the last,
/// unterminated line is held back.
fn reference_lines(data: &[u8], take_unterminated: bool) -> Vec<(u64, Vec<u8>)> {
    let segs: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    let mut out = Vec::new();
    for (n, seg) in segs.iter().enumerate() {
        let terminated = n + 1 < segs.len();
        if is_blank(seg) {
            continue;
        }
        if !terminated && !take_unterminated && classify(seg) == LineKind::Malformed {
            continue;
        }
        out.push((n as u64, strip_cr(seg).to_vec()));
    }
    out
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 3 {
        return;
    }
    let (knobs, data) = input.split_at(3);
    let split = (knobs[0] as usize * data.len()) / 256;
    let limits = Limits {
        max_lines: 1 + (knobs[1] % 8) as usize,
        max_bytes: 1 + knobs[2] as usize,
    };
    // kcap reads transcripts only at `session-state/<id>/events.jsonl`.
    let dir = std::env::temp_dir()
        .join(format!("kcap-fuzz-{}", std::process::id()))
        .join("session-state")
        .join("6f1c2d3e-4b5a-4c6d-8e7f-901a2b3c4d5e");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("events.jsonl");
    std::fs::write(&path, &data[..split]).unwrap();

    let mut incremental = TailObserver::new(&path);
    assert_eq!(incremental.observe(), reference_tail(&data[..split]));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&data[split..])
        .unwrap();
    let expected = reference_tail(data);
    assert_eq!(incremental.observe(), expected, "incremental");
    assert_eq!(TailObserver::new(&path).observe(), expected, "fresh");

    for take in [false, true] {
        let mut reader = LineReader::new(&path);
        let mut at = Watermark::default();
        let mut got = Vec::new();
        for _ in 0..=data.len() + 1 {
            let batch = reader.read_batch(at, limits, take).unwrap().unwrap();
            assert!(batch.lines.len() <= limits.max_lines);
            assert!(batch.lines.len() == 1 || batch.bytes() <= limits.max_bytes);
            got.extend(batch.lines.into_iter().map(|l| (l.number, l.bytes)));
            at = batch.end;
            if batch.at_end {
                break;
            }
        }
        assert_eq!(got, reference_lines(data, take), "take_unterminated = {take}");
    }
});
