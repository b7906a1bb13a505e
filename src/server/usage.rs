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

use std::collections::{BTreeMap, HashSet};

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The largest counter value kept exactly: past 2^53 an `f64` no longer holds every integer, and
/// JSON readers in browsers lose precision. Sums stop here and the usage is flagged `saturated`.
pub const COUNTER_MAX: f64 = 9_007_199_254_740_992.0;

/// How many modified-file names one shutdown keeps: the names are for people to read, and a
/// shutdown listing millions of files must not make every read of its session cost seconds.
/// The rest are counted in `files_omitted`.
pub const FILES_KEPT: usize = 1_000;

/// How many models one shutdown keeps by name: real sessions use a handful, and a hostile line
/// naming hundreds of thousands must not make the stored summary, and every read of usage that
/// folds it, cost megabytes and seconds. The counters of the rest are added into one entry named
/// [`MERGED_MODELS`] (no token leaves the sums) and the models are counted in `models_merged`.
pub const MODELS_KEPT: usize = 256;

/// The name of the entry that holds the counters of the models past [`MODELS_KEPT`].
pub const MERGED_MODELS: &str = "(other models)";

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

    fn zip(&self, other: &ModelUsage, mut f: impl FnMut(f64, f64) -> f64) -> ModelUsage {
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
    /// Counters that were negative, not a number, or not finite: read as 0 and counted here.
    #[serde(default)]
    pub invalid_counters: u64,
    /// A counter was larger than [`COUNTER_MAX`] and was read as that.
    #[serde(default)]
    pub saturated: bool,
    /// Modified files listed beyond the first [`FILES_KEPT`], counted but not kept.
    #[serde(default)]
    pub files_omitted: u64,
    /// Models listed beyond the first [`MODELS_KEPT`], whose counters went into [`MERGED_MODELS`].
    #[serde(default)]
    pub models_merged: u64,
}

impl Shutdown {
    /// The session-level counters, in the order of [`Usage::session_counters_mut`].
    fn session_counters(&self) -> [f64; 5] {
        [
            self.premium_requests,
            self.api_duration_ms,
            self.nano_aiu,
            self.lines_added,
            self.lines_removed,
        ]
    }
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
    /// Counters skipped across all shutdowns because they were negative or not numbers.
    #[serde(default)]
    pub invalid_counters: u64,
    /// Some figure reached [`COUNTER_MAX`] and stopped there: the totals are a lower bound.
    #[serde(default)]
    pub saturated: bool,
    /// Modified files the shutdowns listed beyond what each keeps ([`FILES_KEPT`]).
    #[serde(default)]
    pub files_omitted: u64,
    /// Models the shutdowns listed beyond what each keeps ([`MODELS_KEPT`]), summed under
    /// [`MERGED_MODELS`].
    #[serde(default)]
    pub models_merged: u64,
}

impl Usage {
    /// The session-level totals, in the order of [`Shutdown::session_counters`].
    fn session_counters_mut(&mut self) -> [&mut f64; 5] {
        [
            &mut self.premium_requests,
            &mut self.api_duration_ms,
            &mut self.nano_aiu,
            &mut self.lines_added,
            &mut self.lines_removed,
        ]
    }
}

/// What a transcript line means to the usage fold.
#[derive(Debug, Clone, PartialEq)]
pub enum UsageEvent {
    /// A `session.shutdown` event and what it reports.
    Shutdown(Box<Shutdown>),
    /// A `session.usage_checkpoint` event: the transcript carries running totals across resumes.
    Checkpoint,
    /// Anything else, including lines that merely mention those event names in their text.
    Other,
}

/// Classifies a transcript line by its parsed `type` field. A substring test only rules lines out
/// cheaply; the decision is always made on the parsed JSON, so a grep result that prints
/// `"session.usage_checkpoint"` inside a tool output is `Other`.
pub fn classify(line: &str) -> UsageEvent {
    let mentions_shutdown = line.contains("session.shutdown");
    if !mentions_shutdown && !line.contains("session.usage_checkpoint") {
        return UsageEvent::Other;
    }
    let parsed = serde_json::from_str::<Event>(line).or_else(|e| {
        // serde_json refuses numbers past f64 (`1e400`): neither a shutdown nor a checkpoint may
        // vanish for that (a lost checkpoint flips the fold rule), so such numbers are read as
        // the largest finite one (a shutdown's are then saturated and flagged).
        match clamp_overflowing_numbers(line) {
            Some(clamped) => serde_json::from_str::<Event>(&clamped),
            None => Err(e),
        }
    });
    let Ok(event) = parsed else {
        return UsageEvent::Other;
    };
    match event.kind.as_ref().and_then(Value::as_str) {
        Some("session.shutdown") => UsageEvent::Shutdown(Box::new(shutdown_of(event.data))),
        Some("session.usage_checkpoint") => UsageEvent::Checkpoint,
        _ => UsageEvent::Other,
    }
}

/// `line` with every number that overflows an `f64` (as `1e400` or `-1e400`) written as
/// `±1e308`; `None` when there is none. Strings are skipped, escapes included.
fn clamp_overflowing_numbers(line: &str) -> Option<String> {
    let bytes = line.as_bytes();
    let (mut out, mut copied, mut changed) = (String::with_capacity(line.len()), 0, false);
    let (mut i, mut in_string) = (0, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while i < bytes.len() && matches!(bytes[i], b'0'..=b'9' | b'+' | b'-' | b'.' | b'e' | b'E') {
                i += 1;
            }
            let token = &line[start..i];
            if token.parse::<f64>().is_ok_and(f64::is_infinite) {
                out.push_str(&line[copied..start]);
                out.push_str(if b == b'-' { "-1e308" } else { "1e308" });
                copied = i;
                changed = true;
            }
            continue;
        }
        i += 1;
    }
    changed.then(|| out + &line[copied..])
}

/// Parses a transcript line; `None` unless it is a `session.shutdown` object.
pub fn parse_shutdown(line: &str) -> Option<Shutdown> {
    match classify(line) {
        UsageEvent::Shutdown(s) => Some(*s),
        _ => None,
    }
}

/// Reads counters out of one event, keeping count of the ones it had to refuse.
#[derive(Default)]
struct CounterReader {
    invalid: u64,
    saturated: bool,
}

impl CounterReader {
    /// A missing or null counter is 0; a negative, non-numeric or non-finite one is 0 and counted
    /// as invalid; one past [`COUNTER_MAX`] is read as the maximum and flagged.
    fn read(&mut self, v: &Value, pointer: &str) -> f64 {
        match v.pointer(pointer) {
            None | Some(Value::Null) => 0.0,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(x) if x.is_finite() && x >= 0.0 => {
                    if x > COUNTER_MAX {
                        self.saturated = true;
                    }
                    x.min(COUNTER_MAX)
                }
                _ => {
                    self.invalid += 1;
                    0.0
                }
            },
            Some(_) => {
                self.invalid += 1;
                0.0
            }
        }
    }
}

impl CounterReader {
    /// The counters of one `modelMetrics` entry.
    fn model(&mut self, m: &Value) -> ModelUsage {
        ModelUsage {
            requests: self.read(m, "/requests/count"),
            premium_cost: self.read(m, "/requests/cost"),
            input_tokens: self.read(m, "/usage/inputTokens"),
            output_tokens: self.read(m, "/usage/outputTokens"),
            cache_read_tokens: self.read(m, "/usage/cacheReadTokens"),
            cache_write_tokens: self.read(m, "/usage/cacheWriteTokens"),
            reasoning_tokens: self.read(m, "/usage/reasoningTokens"),
            nano_aiu: self.read(m, "/totalNanoAiu"),
        }
    }
}

/// The models of one shutdown: the first [`MODELS_KEPT`] listed, the rest summed under
/// [`MERGED_MODELS`] and counted.
#[derive(Default)]
struct KeptModels {
    kept: BTreeMap<String, ModelUsage>,
    merged: u64,
    counters: CounterReader,
}

impl KeptModels {
    fn add(&mut self, model: &str, metrics: &Value) {
        let usage = self.counters.model(metrics);
        // A model that calls itself MERGED_MODELS is merged too: it may not replace the sum.
        let own = model != MERGED_MODELS;
        if let Some(same) = self.kept.get_mut(model).filter(|_| own) {
            // A repeated name replaces the earlier entry, as a JSON object's last key does.
            *same = usage;
        } else if own && self.kept.len() < MODELS_KEPT {
            self.kept.insert(model.to_string(), usage);
        } else {
            self.merged += 1;
            let saturated = &mut self.counters.saturated;
            let other = self.kept.entry(MERGED_MODELS.to_string()).or_default();
            *other = other.zip(&usage, |mut t, d| {
                add(&mut t, d, saturated);
                t
            });
        }
    }
}

/// A transcript line as the usage fold reads it: its `type`, and its `data` with `modelMetrics`
/// folded entry by entry while parsing, so a line naming a million models holds one at a time.
/// Repeated keys keep the last, as [`Value`] does; a line or `data` that is no object is empty.
#[derive(Default)]
struct Event {
    kind: Option<Value>,
    data: Data,
}

/// An event's `data`: every field but `modelMetrics` as it is.
#[derive(Default)]
struct Data {
    fields: Value,
    models: KeptModels,
}

/// Builds a value from a JSON object's entries; [`ObjectOrEmpty`] gives the default for others.
trait FromEntries<'de>: Default {
    fn from_entries<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

/// Reads a `T` from an object, and `T::default()` from any other JSON value.
struct ObjectOrEmpty<T>(PhantomData<T>);

/// `T` from any JSON value (see [`ObjectOrEmpty`]).
fn object_or_empty<'de, T: FromEntries<'de>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(ObjectOrEmpty(PhantomData))
}

impl<'de, T: FromEntries<'de>> Visitor<'de> for ObjectOrEmpty<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_entries(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(T::default())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok(T::default())
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        object_or_empty(d)
    }
}

impl<'de> FromEntries<'de> for Event {
    fn from_entries<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut event = Event::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "type" => event.kind = Some(map.next_value()?),
                "data" => event.data = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(event)
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        object_or_empty(d)
    }
}

impl<'de> FromEntries<'de> for Data {
    fn from_entries<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let (mut fields, mut models) = (Map::new(), KeptModels::default());
        while let Some(key) = map.next_key::<String>()? {
            if key == "modelMetrics" {
                models = map.next_value()?;
            } else {
                fields.insert(key, map.next_value()?);
            }
        }
        Ok(Data {
            fields: Value::Object(fields),
            models,
        })
    }
}

impl<'de> Deserialize<'de> for KeptModels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        object_or_empty(d)
    }
}

impl<'de> FromEntries<'de> for KeptModels {
    fn from_entries<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut models = KeptModels::default();
        while let Some(name) = map.next_key::<String>()? {
            models.add(&name, &map.next_value::<Value>()?);
        }
        Ok(models)
    }
}

fn shutdown_of(Data { fields, models }: Data) -> Shutdown {
    let data = &fields;
    let mut r = CounterReader::default();
    let listed = data
        .pointer("/codeChanges/filesModified")
        .and_then(Value::as_array);
    let names = listed.into_iter().flatten().filter_map(Value::as_str);
    let files_modified: Vec<String> = names.clone().take(FILES_KEPT).map(String::from).collect();
    let files_omitted = (names.count() - files_modified.len()) as u64;
    let mut s = Shutdown {
        models: models.kept,
        models_merged: models.merged,
        premium_requests: r.read(data, "/totalPremiumRequests"),
        api_duration_ms: r.read(data, "/totalApiDurationMs"),
        nano_aiu: r.read(data, "/totalNanoAiu"),
        lines_added: r.read(data, "/codeChanges/linesAdded"),
        lines_removed: r.read(data, "/codeChanges/linesRemoved"),
        files_modified,
        ..Shutdown::default()
    };
    s.invalid_counters = r.invalid + models.counters.invalid;
    s.saturated = r.saturated || models.counters.saturated;
    s.files_omitted = files_omitted;
    s
}

/// True when `later` repeats `earlier`'s totals: nothing named earlier went down.
fn never_decreases(earlier: &Shutdown, later: &Shutdown) -> bool {
    let (before, after) = (earlier.session_counters(), later.session_counters());
    before.iter().zip(after).all(|(a, b)| b >= *a)
        && earlier.models.iter().all(|(model, e)| {
            later
                .models
                .get(model)
                .is_some_and(|l| e.fields().iter().zip(l.fields()).all(|(a, b)| b >= *a))
        })
}

/// Adds `delta` to `total`, stopping at [`COUNTER_MAX`] and noting it.
fn add(total: &mut f64, delta: f64, saturated: &mut bool) {
    let sum = *total + delta;
    if sum > COUNTER_MAX {
        *saturated = true;
    }
    *total = sum.min(COUNTER_MAX);
}

/// Folds a session's shutdowns in file order. `has_usage_checkpoints`: the transcript contains
/// `session.usage_checkpoint` events (see [`classify`]). Linear in the size of its input.
pub fn fold(shutdowns: &[Shutdown], has_usage_checkpoints: bool) -> Usage {
    let mut usage = Usage {
        shutdowns: shutdowns.len(),
        ..Usage::default()
    };
    let mut saturated = false;
    let mut seen_files: HashSet<&str> = HashSet::new();
    let zero = Shutdown::default();
    let mut previous: Option<&Shutdown> = None;
    for s in shutdowns {
        let cumulative = previous.is_some_and(|p| has_usage_checkpoints && never_decreases(p, s));
        if previous.is_some() {
            usage
                .readings
                .push(if cumulative { "cumulative" } else { "segment" }.into());
        }
        // never_decreases guarantees every difference below is >= 0 when cumulative.
        let base = if cumulative {
            previous.unwrap_or(&zero)
        } else {
            &zero
        };
        for (model, m) in &s.models {
            let before = base.models.get(model).copied().unwrap_or_default();
            let delta = m.zip(&before, |a, b| a - b);
            let total = usage.models.entry(model.clone()).or_default();
            *total = total.zip(&delta, |mut t, d| {
                add(&mut t, d, &mut saturated);
                t
            });
        }
        let (now, before) = (s.session_counters(), base.session_counters());
        for ((total, n), b) in usage.session_counters_mut().into_iter().zip(now).zip(before) {
            add(total, n - b, &mut saturated);
        }
        for f in &s.files_modified {
            if seen_files.insert(f.as_str()) {
                usage.files_modified.push(f.clone());
            }
        }
        usage.invalid_counters = usage.invalid_counters.saturating_add(s.invalid_counters);
        usage.files_omitted = usage.files_omitted.saturating_add(s.files_omitted);
        usage.models_merged = usage.models_merged.saturating_add(s.models_merged);
        saturated |= s.saturated;
        previous = Some(s);
    }
    usage.saturated = saturated;
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
    fn segments_add_without_checkpoints_and_cumulative_totals_are_differenced_with_them() {
        for (checkpoints, input, premium, reading) in
            [(false, 250.0, 3.0, "segment"), (true, 150.0, 2.0, "cumulative")]
        {
            let u = fold(
                &[shutdown("a", 100.0, 1.0), shutdown("a", 150.0, 2.0)],
                checkpoints,
            );
            let figures = (u.models["a"].input_tokens, u.premium_requests);
            assert_eq!(figures, (input, premium), "checkpoints: {checkpoints}");
            assert_eq!(u.readings, [reading]);
        }
    }

    #[test]
    fn every_session_level_counter_is_differenced_and_any_decrease_means_segments() {
        let at = |n: f64| Shutdown {
            premium_requests: n,
            api_duration_ms: n * 10.0,
            nano_aiu: n * 100.0,
            lines_added: n + 1.0,
            lines_removed: n + 2.0,
            ..Shutdown::default()
        };
        let u = fold(&[at(1.0), at(3.0)], true);
        let totals = [
            u.premium_requests,
            u.api_duration_ms,
            u.nano_aiu,
            u.lines_added,
            u.lines_removed,
        ];
        assert_eq!(totals, [3.0, 30.0, 300.0, 4.0, 5.0]);
        assert_eq!(u.readings, ["cumulative"]);
        let mut fewer_removed = at(3.0);
        fewer_removed.lines_removed = 0.0;
        let u = fold(&[at(1.0), fewer_removed], true);
        assert_eq!((u.premium_requests, u.lines_removed), (4.0, 3.0));
        assert_eq!(u.readings, ["segment"]);
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

    fn line(data: &str) -> String {
        format!(r#"{{"type":"session.shutdown","data":{data}}}"#)
    }

    #[test]
    fn the_checkpoint_rule_reads_event_types_not_text() {
        let grep =
            r#"{"type":"tool.execution_complete","data":{"result":"x.rs: \"session.usage_checkpoint\""}}"#;
        assert_eq!(classify(grep), UsageEvent::Other);
        let mention = r#"{"type":"assistant.message","data":{"content":"type session.shutdown"}}"#;
        assert_eq!(classify(mention), UsageEvent::Other);
        assert_eq!(
            classify(r#"{"type":"session.usage_checkpoint","data":{}}"#),
            UsageEvent::Checkpoint
        );
        assert!(matches!(classify(&line("{}")), UsageEvent::Shutdown(_)));
    }

    #[test]
    fn a_checkpoint_with_an_overflowing_counter_still_counts() {
        // serde_json refuses `1e400`; the checkpoint used to be dropped, flipping the fold rule
        // of a resumed session from cumulative to segments.
        for n in ["1e400", "-1e400", "123456789e999"] {
            let c =
                format!(r#"{{"type":"session.usage_checkpoint","data":{{"inputTokens":{n},"x":"1e400"}}}}"#);
            assert_eq!(classify(&c), UsageEvent::Checkpoint, "{c}");
        }
        let broken = r#"{"type":"session.usage_checkpoint","data":{"inputTokens":1e400"#;
        assert_eq!(classify(broken), UsageEvent::Other);
    }

    #[test]
    fn negative_string_and_non_finite_counters_are_skipped_and_counted() {
        let s = parse_shutdown(&line(
            r#"{"totalPremiumRequests":-3,"totalApiDurationMs":"12","modelMetrics":{"m":{"requests":{"count":2,"cost":true},"usage":{"inputTokens":-1,"outputTokens":7,"cacheReadTokens":null}}}}"#,
        ))
        .unwrap();
        assert_eq!(s.invalid_counters, 4);
        assert_eq!((s.premium_requests, s.api_duration_ms), (0.0, 0.0));
        assert_eq!((s.models["m"].requests, s.models["m"].output_tokens), (2.0, 7.0));
        assert_eq!(
            (s.models["m"].input_tokens, s.models["m"].premium_cost),
            (0.0, 0.0)
        );
        let u = fold(&[s.clone(), s], false);
        assert_eq!(u.invalid_counters, 8);
        assert_eq!(u.models["m"].output_tokens, 14.0);
        assert!(!u.saturated);
    }

    #[test]
    fn huge_counters_saturate_and_are_flagged_instead_of_becoming_null() {
        let big = line(
            r#"{"totalPremiumRequests":1e308,"modelMetrics":{"m":{"usage":{"inputTokens":9007199254740000}}}}"#,
        );
        let s = parse_shutdown(&big).unwrap();
        assert!(s.saturated);
        assert_eq!(s.premium_requests, COUNTER_MAX);
        let u = fold(&[s.clone(), s.clone(), s], false);
        assert!(u.saturated);
        assert_eq!(u.premium_requests, COUNTER_MAX);
        assert_eq!(u.models["m"].input_tokens, COUNTER_MAX);
        let json = serde_json::to_string(&u).unwrap();
        assert!(!json.contains("null"), "{json}");
        let small = fold(&[shutdown("a", 1.0, 1.0)], false);
        assert!(!small.saturated);
    }

    #[test]
    fn counters_past_f64_saturate_or_count_as_invalid_instead_of_dropping_the_shutdown() {
        // serde_json alone refuses the whole line: the shutdown (and its other counters) vanished.
        let s = parse_shutdown(&line(
            r#"{"totalPremiumRequests":1e400,"totalApiDurationMs":-1E+400,"note":"1e400 \" 2e999","modelMetrics":{"m":{"usage":{"inputTokens":5,"outputTokens":12e999}}}}"#,
        ))
        .expect("still a shutdown");
        assert!(s.saturated);
        assert_eq!(s.premium_requests, COUNTER_MAX);
        assert_eq!(s.models["m"].output_tokens, COUNTER_MAX);
        assert_eq!(s.models["m"].input_tokens, 5.0);
        assert_eq!((s.api_duration_ms, s.invalid_counters), (0.0, 1));
        assert_eq!(
            clamp_overflowing_numbers(r#"{"a":"1e400","b":[1e400,-2e500,3]}"#).as_deref(),
            Some(r#"{"a":"1e400","b":[1e308,-1e308,3]}"#)
        );
        assert_eq!(clamp_overflowing_numbers(r#"{"a":1e300}"#), None);
        // Other lines that fail to parse stay what they were.
        assert_eq!(
            classify(r#"{"type":"session.shutdown","data":{"x":1e400"#),
            UsageEvent::Other
        );
    }

    #[test]
    fn a_shutdown_keeps_a_bounded_list_of_files_and_counts_the_rest() {
        let names: Vec<String> = (0..FILES_KEPT + 5).map(|i| format!("\"f{i}\"")).collect();
        let s = parse_shutdown(&line(&format!(
            r#"{{"codeChanges":{{"filesModified":[{}]}}}}"#,
            names.join(",")
        )))
        .unwrap();
        assert_eq!((s.files_modified.len(), s.files_omitted), (FILES_KEPT, 5));
        let u = fold(&[s.clone(), s], false);
        assert_eq!((u.files_modified.len(), u.files_omitted), (FILES_KEPT, 10));
    }

    /// A shutdown line naming `models` models, model `i` with `i + 1` input tokens.
    fn many_models(models: usize) -> String {
        let entries: Vec<String> = (0..models)
            .map(|i| {
                format!(
                    r#""model-{i:07}":{{"requests":{{"count":1,"cost":1}},"usage":{{"inputTokens":{},"outputTokens":1}}}}"#,
                    i + 1
                )
            })
            .collect();
        line(&format!(r#"{{"modelMetrics":{{{}}}}}"#, entries.join(",")))
    }

    #[test]
    fn a_shutdown_keeps_a_bounded_list_of_models_and_merges_the_rest() {
        let n = MODELS_KEPT + 5;
        let s = parse_shutdown(&many_models(n)).unwrap();
        assert_eq!((s.models.len(), s.models_merged), (MODELS_KEPT + 1, 5));
        assert_eq!(s.models[MERGED_MODELS].requests, 5.0);
        let input: f64 = s.models.values().map(|m| m.input_tokens).sum();
        let requests: f64 = s.models.values().map(|m| m.requests).sum();
        assert_eq!((input, requests), ((n * (n + 1) / 2) as f64, n as f64));
        let u = fold(&[s.clone(), s], false);
        assert_eq!((u.models.len(), u.models_merged), (MODELS_KEPT + 1, 10));
        let output: f64 = u.models.values().map(|m| m.output_tokens).sum();
        assert_eq!(output, 2.0 * n as f64);
    }

    #[test]
    fn a_shutdown_naming_a_hundred_thousand_models_stores_a_bounded_summary() {
        let text = many_models(100_000);
        let s = parse_shutdown(&text).unwrap();
        let stored = serde_json::to_string(&s).unwrap();
        // About 200 bytes per kept model; the line itself is about 10 MB.
        assert!(stored.len() < 100_000, "{} bytes stored", stored.len());
        let u = serde_json::to_string(&fold(&[s.clone(), s], true)).unwrap();
        assert!(u.len() < 100_000, "{} bytes folded", u.len());
        assert!(u.contains(r#""models_merged":199488"#), "{}", &u[u.len() - 200..]);
    }

    #[test]
    fn models_are_kept_in_listed_order_while_parsing_and_odd_shapes_read_as_before() {
        // Kept as listed, not by name: the parser cannot sort what it does not hold.
        let entries: Vec<String> = (0..=MODELS_KEPT)
            .rev()
            .map(|i| format!(r#""m{i:04}":{{"usage":{{"inputTokens":{}}}}}"#, i + 1))
            .collect();
        let s = parse_shutdown(&line(&format!(r#"{{"modelMetrics":{{{}}}}}"#, entries.join(","))));
        let s = s.unwrap();
        assert!(!s.models.contains_key("m0000") && s.models.contains_key("m0256"));
        assert_eq!((s.models[MERGED_MODELS].input_tokens, s.models_merged), (1.0, 1));
        // A model posing as the merged entry adds to it and never replaces it.
        let s = parse_shutdown(&line(
            r#"{"modelMetrics":{"(other models)":{"usage":{"inputTokens":3}},"(other models)":{"usage":{"inputTokens":-4}}}}"#,
        ))
        .unwrap();
        assert_eq!(s.models[MERGED_MODELS].input_tokens, 3.0);
        assert_eq!((s.models_merged, s.invalid_counters), (2, 1));
        // Repeated keys keep the last; a `data` or `modelMetrics` that is no object is empty.
        let s = classify(
            r#"{"type":"x","type":"session.shutdown","data":{"modelMetrics":{"a":{"usage":{"inputTokens":1}},"a":{"usage":{"inputTokens":2}}}}}"#,
        );
        let UsageEvent::Shutdown(s) = s else {
            panic!("{s:?}")
        };
        assert_eq!(s.models["a"].input_tokens, 2.0);
        let s = parse_shutdown(&line(r#"{"modelMetrics":"x","totalPremiumRequests":2}"#)).unwrap();
        assert_eq!((s.models.len(), s.premium_requests), (0, 2.0));
        assert_eq!(parse_shutdown(&line("[1,{}]")), Some(Shutdown::default()));
        assert_eq!(parse_shutdown(&line("null")), Some(Shutdown::default()));
        assert_eq!(classify(r#"["session.shutdown"]"#), UsageEvent::Other);
        assert_eq!(classify(r#""session.shutdown""#), UsageEvent::Other);
    }

    #[test]
    fn files_are_listed_once_in_first_seen_order() {
        let mut a = shutdown("a", 1.0, 1.0);
        a.files_modified = vec!["x".into(), "y".into(), "x".into()];
        let mut b = shutdown("a", 1.0, 1.0);
        b.files_modified = vec!["z".into(), "y".into()];
        assert_eq!(fold(&[a, b], false).files_modified, ["x", "y", "z"]);
    }
}
