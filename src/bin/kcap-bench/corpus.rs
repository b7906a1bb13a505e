//! A search corpus that looks like many different sessions: agent-shaped JSONL lines (the default agent's transcript format) whose
//! prose is drawn from a fixed vocabulary with a Zipf spread (the word of rank r appears about
//! 1/r as often as the commonest), so full-text posting lists run from huge to single-entry as
//! in real transcripts. Deterministic from a seed: the same seed gives the same bytes.

use serde_json::json;

/// Lines per generated session.
pub const SESSION_LINES: usize = 2_000;

/// splitmix64: tiny, fast, and good enough to spread words; no dependency needed for that.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SYLLABLES: [&str; 32] = [
    "ka", "to", "re", "mi", "lo", "sa", "ne", "du", "pi", "gor", "an", "el", "vin", "tas", "bor", "qua",
    "zel", "fi", "mon", "ru", "sek", "da", "ly", "pex", "no", "ar", "tri", "uso", "cle", "van", "ho", "wit",
];

/// The vocabulary in rank order: about 34,000 pronounceable words of two or three syllables.
pub fn vocabulary() -> Vec<String> {
    let mut words = Vec::new();
    for a in SYLLABLES {
        for b in SYLLABLES {
            words.push(format!("{a}{b}"));
        }
    }
    for a in SYLLABLES {
        for b in SYLLABLES {
            for c in SYLLABLES {
                words.push(format!("{a}{b}{c}"));
            }
        }
    }
    // Shuffle deterministically so rank is unrelated to spelling.
    let mut rng = Rng(0x6b63_6170);
    for i in (1..words.len()).rev() {
        words.swap(i, rng.below(i + 1));
    }
    words
}

/// Draws word ranks with P(rank r) ∝ 1/(r+1).
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Zipf {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|r| {
                total += 1.0 / (r as f64 + 1.0);
                total
            })
            .collect::<Vec<_>>();
        Zipf {
            cumulative: cumulative.iter().map(|c| c / total).collect(),
        }
    }

    fn draw(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cumulative
            .partition_point(|&c| c < u)
            .min(self.cumulative.len() - 1)
    }
}

/// About `mb` megabytes of lines from `seed`, in sessions of [`SESSION_LINES`] lines.
pub fn generate(seed: u64, mb: u64, words: &[String]) -> Vec<String> {
    let zipf = Zipf::new(words.len());
    let mut rng = Rng(seed);
    let want = mb as usize * 1024 * 1024;
    let mut bytes = 0;
    let mut lines = Vec::new();
    while bytes < want {
        // 5–300 words, skewed short like chat turns, with the odd long tool output.
        let count = 5 + (rng.unit().powi(3) * 295.0) as usize;
        let mut text = String::with_capacity(count * 7);
        for i in 0..count {
            if i > 0 {
                text.push(if rng.below(12) == 0 { '\n' } else { ' ' });
            }
            text.push_str(&words[zipf.draw(&mut rng)]);
        }
        let n = lines.len();
        let stamp = format!(
            "2026-11-{:02}T{:02}:{:02}:{:02}.000Z",
            1 + n / SESSION_LINES % 28,
            n / 3600 % 24,
            n / 60 % 60,
            n % 60
        );
        let line = match rng.below(4) {
            0 => json!({ "type": "user.message", "data": { "content": text }, "timestamp": stamp }),
            1 => json!({ "type": "tool.execution_complete",
                "data": { "toolCallId": format!("c{n}"), "success": true, "result": { "content": text } },
                "timestamp": stamp }),
            _ => json!({ "type": "assistant.message", "data": { "content": text }, "timestamp": stamp }),
        }
        .to_string();
        bytes += line.len() + 1;
        lines.push(line);
    }
    lines
}

/// Queries across the frequency range: the commonest word, words of rank 10, 100, 1,000 and
/// 20,000, two-word conjunctions (common and mixed), and a word that is never there.
pub fn queries(words: &[String]) -> Vec<String> {
    let w = |r: usize| words[r.min(words.len() - 1)].clone();
    vec![
        w(0),
        w(10),
        w(100),
        w(1_000),
        w(20_000),
        format!("{} {}", w(1), w(2)),
        format!("{} {}", w(3), w(5_000)),
        "zzzznothing".to_string(),
    ]
}
