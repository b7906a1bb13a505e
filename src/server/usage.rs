//! Token usage of a session: the fold of its `session.shutdown` lines (pure).
//!
//! A resumed session holds one shutdown per process lifetime. Whether a later shutdown repeats the
//! earlier totals (cumulative) or counts only its own segment changed across Copilot versions
//! (research §3), so it is decided from each file's own data:
//!
//! - a later shutdown is **cumulative** (its totals minus the previous ones are the new segment)
//!   when the transcript carries `session.usage_checkpoint` events (the durable running totals
//!   that newer CLIs restore on resume) *and* none of its counters is lower than the previous
//!   shutdown's, for every model the previous one named;
//! - otherwise it is a **segment** of its own and is added.
//!
//! A decreasing counter proves per-segment totals whatever the version; without checkpoints
//! (1.0.2-era files) totals were never carried across a resume.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Counters of one model (or of a whole session, for the session-level fields).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelUsage {
    pub requests: f64,
    pub premium_cost: f64,
    pub input_tokens: f64,
    pub output_tokens: f64,
    pub cache_read_tokens: f64,
    pub cache_write_tokens: f64,
    pub reasoning_tokens: f64,
    pub nano_aiu: f64,
}

impl ModelUsage {
    fn fields(&self) -> [f64; 8] {
        [
            self.requests,
            self.premium_cost,
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.reasoning_tokens,
            self.nano_aiu,
        ]
    }

    fn zip(&self, other: &ModelUsage, f: impl Fn(f64, f64) -> f64) -> ModelUsage {
        ModelUsage {
            requests: f(self.requests, other.requests),
            premium_cost: f(self.premium_cost, other.premium_cost),
            input_tokens: f(self.input_tokens, other.input_tokens),
            output_tokens: f(self.output_tokens, other.output_tokens),
            cache_read_tokens: f(self.cache_read_tokens, other.cache_read_tokens),
            cache_write_tokens: f(self.cache_write_tokens, other.cache_write_tokens),
            reasoning_tokens: f(self.reasoning_tokens, other.reasoning_tokens),
            nano_aiu: f(self.nano_aiu, other.nano_aiu),
        }
    }
}

/// What one `session.shutdown` line reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Shutdown {
    pub models: BTreeMap<String, ModelUsage>,
    pub premium_requests: f64,
    pub api_duration_ms: f64,
    pub nano_aiu: f64,
    pub lines_added: f64,
    pub lines_removed: f64,
    pub files_modified: Vec<String>,
}

/// The folded usage of a session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub models: BTreeMap<String, ModelUsage>,
    pub premium_requests: f64,
    pub api_duration_ms: f64,
    pub nano_aiu: f64,
    pub lines_added: f64,
    pub lines_removed: f64,
    pub files_modified: Vec<String>,
    pub shutdowns: usize,
    /// How each shutdown after the first was read: "segment" or "cumulative".
    pub readings: Vec<String>,
}

/// Parses a transcript line; `None` unless it is a `session.shutdown` object.
pub fn parse_shutdown(line: &str) -> Option<Shutdown> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("type")?.as_str()? != "session.shutdown" {
        return None;
    }
    let data = v.get("data")?;
    let num =
        |v: &serde_json::Value, p: &str| v.pointer(p).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    let mut models = BTreeMap::new();
    if let Some(metrics) = data.get("modelMetrics").and_then(|m| m.as_object()) {
        for (model, m) in metrics {
            models.insert(
                model.clone(),
                ModelUsage {
                    requests: num(m, "/requests/count"),
                    premium_cost: num(m, "/requests/cost"),
                    input_tokens: num(m, "/usage/inputTokens"),
                    output_tokens: num(m, "/usage/outputTokens"),
                    cache_read_tokens: num(m, "/usage/cacheReadTokens"),
                    cache_write_tokens: num(m, "/usage/cacheWriteTokens"),
                    reasoning_tokens: num(m, "/usage/reasoningTokens"),
                    nano_aiu: num(m, "/totalNanoAiu"),
                },
            );
        }
    }
    let files = data
        .pointer("/codeChanges/filesModified")
        .and_then(|f| f.as_array())
        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default();
    Some(Shutdown {
        models,
        premium_requests: num(data, "/totalPremiumRequests"),
        api_duration_ms: num(data, "/totalApiDurationMs"),
        nano_aiu: num(data, "/totalNanoAiu"),
        lines_added: num(data, "/codeChanges/linesAdded"),
        lines_removed: num(data, "/codeChanges/linesRemoved"),
        files_modified: files,
    })
}

/// True when `later` repeats `earlier`'s totals: nothing named earlier went down.
fn never_decreases(earlier: &Shutdown, later: &Shutdown) -> bool {
    let session_level = [
        (earlier.premium_requests, later.premium_requests),
        (earlier.api_duration_ms, later.api_duration_ms),
        (earlier.nano_aiu, later.nano_aiu),
        (earlier.lines_added, later.lines_added),
        (earlier.lines_removed, later.lines_removed),
    ];
    session_level.iter().all(|(a, b)| b >= a)
        && earlier.models.iter().all(|(model, e)| {
            later
                .models
                .get(model)
                .is_some_and(|l| e.fields().iter().zip(l.fields()).all(|(a, b)| b >= *a))
        })
}

/// Folds a session's shutdowns in file order. `has_usage_checkpoints`: the transcript contains
/// `session.usage_checkpoint` events.
pub fn fold(shutdowns: &[Shutdown], has_usage_checkpoints: bool) -> Usage {
    let mut usage = Usage {
        shutdowns: shutdowns.len(),
        ..Usage::default()
    };
    let mut previous: Option<&Shutdown> = None;
    for s in shutdowns {
        let cumulative = previous.is_some_and(|p| has_usage_checkpoints && never_decreases(p, s));
        if previous.is_some() {
            usage
                .readings
                .push(if cumulative { "cumulative" } else { "segment" }.into());
        }
        let base = if cumulative { previous } else { None };
        let zero = Shutdown::default();
        let base = base.unwrap_or(&zero);
        for (model, m) in &s.models {
            let before = base.models.get(model).copied().unwrap_or_default();
            let delta = m.zip(&before, |a, b| a - b);
            let total = usage.models.entry(model.clone()).or_default();
            *total = total.zip(&delta, |a, b| a + b);
        }
        usage.premium_requests += s.premium_requests - base.premium_requests;
        usage.api_duration_ms += s.api_duration_ms - base.api_duration_ms;
        usage.nano_aiu += s.nano_aiu - base.nano_aiu;
        usage.lines_added += s.lines_added - base.lines_added;
        usage.lines_removed += s.lines_removed - base.lines_removed;
        for f in &s.files_modified {
            if !usage.files_modified.contains(f) {
                usage.files_modified.push(f.clone());
            }
        }
        previous = Some(s);
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shutdown(model: &str, input: f64, premium: f64) -> Shutdown {
        let mut models = BTreeMap::new();
        models.insert(
            model.to_string(),
            ModelUsage {
                input_tokens: input,
                requests: 1.0,
                ..ModelUsage::default()
            },
        );
        Shutdown {
            models,
            premium_requests: premium,
            ..Shutdown::default()
        }
    }

    #[test]
    fn segments_add_without_checkpoints() {
        let u = fold(&[shutdown("a", 100.0, 1.0), shutdown("a", 150.0, 2.0)], false);
        assert_eq!(u.models["a"].input_tokens, 250.0);
        assert_eq!(u.premium_requests, 3.0);
        assert_eq!(u.readings, ["segment"]);
    }

    #[test]
    fn cumulative_totals_are_differenced_with_checkpoints() {
        let u = fold(&[shutdown("a", 100.0, 1.0), shutdown("a", 150.0, 2.0)], true);
        assert_eq!(u.models["a"].input_tokens, 150.0);
        assert_eq!(u.premium_requests, 2.0);
        assert_eq!(u.readings, ["cumulative"]);
    }

    #[test]
    fn a_decrease_or_a_vanished_model_means_segments_even_with_checkpoints() {
        let u = fold(&[shutdown("a", 100.0, 1.0), shutdown("a", 50.0, 2.0)], true);
        assert_eq!(u.models["a"].input_tokens, 150.0);
        let u = fold(&[shutdown("a", 100.0, 1.0), shutdown("b", 500.0, 2.0)], true);
        assert_eq!(
            (u.models["a"].input_tokens, u.models["b"].input_tokens),
            (100.0, 500.0)
        );
        assert_eq!(u.readings, ["segment"]);
    }

    #[test]
    fn only_shutdown_lines_parse() {
        assert!(parse_shutdown(r#"{"type":"session.resume","data":{}}"#).is_none());
        assert!(parse_shutdown("not json").is_none());
        let s = parse_shutdown(r#"{"type":"session.shutdown","data":{"modelMetrics":{"m":{"requests":{"count":2,"cost":1},"usage":{"inputTokens":5}}},"codeChanges":{"filesModified":["x"]}}}"#).unwrap();
        assert_eq!(s.models["m"].requests, 2.0);
        assert_eq!(s.files_modified, ["x"]);
    }
}
