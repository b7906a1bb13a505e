//! Usage across sessions, grouped by day, model, repository or machine (pure).
//!
//! Every backend hands over the same [`UsageSource`]s (a session's `session.shutdown` lines,
//! each stored once per line number however many clients delivered it), and this one fold turns
//! them into rows, so the figures cannot differ between backends. A session's usage is
//! [`crate::server::usage::fold`] of its shutdowns; by day, each shutdown contributes the
//! segment it adds to that fold, on the UTC day of its own timestamp.

use std::collections::BTreeMap;

use super::format::day_of_ms;
use super::model::{UsageGroup, UsageRow, UsageSource};
use crate::server::usage::{fold, ModelUsage, Shutdown, Usage};

const UNKNOWN: &str = "(unknown)";

/// The rows of `group`, from every source: days ascending, other groups largest first.
pub fn usage(sources: &[UsageSource], group: UsageGroup) -> Vec<UsageRow> {
    let mut rows: BTreeMap<String, (UsageRow, Option<usize>)> = BTreeMap::new();
    for (index, source) in sources.iter().enumerate() {
        let shutdowns = &source.shutdowns;
        if shutdowns.is_empty() {
            continue;
        }
        let mut add = |key: String, f: &dyn Fn(&mut UsageRow)| {
            let (row, last) = rows.entry(key.clone()).or_insert_with(|| {
                (
                    UsageRow {
                        key,
                        ..UsageRow::default()
                    },
                    None,
                )
            });
            f(row);
            if *last != Some(index) {
                row.sessions += 1;
                *last = Some(index);
            }
        };
        match group {
            UsageGroup::Day => {
                let fallback = day_of_ms(source.started_at);
                for (i, (_, day)) in shutdowns.iter().enumerate() {
                    let delta = segment(shutdowns, i, source.has_usage_checkpoints);
                    let day = day.clone().unwrap_or_else(|| fallback.clone());
                    add(day, &|row| add_totals(row, &delta));
                }
            }
            UsageGroup::Model => {
                let all: Vec<Shutdown> = shutdowns.iter().map(|(s, _)| s.clone()).collect();
                let total = fold(&all, source.has_usage_checkpoints);
                for (model, m) in &total.models {
                    add(model.clone(), &|row| {
                        add_model(row, m);
                        row.premium_requests += m.premium_cost;
                    });
                }
            }
            UsageGroup::Repo | UsageGroup::Machine => {
                let all: Vec<Shutdown> = shutdowns.iter().map(|(s, _)| s.clone()).collect();
                let total = fold(&all, source.has_usage_checkpoints);
                let key = if group == UsageGroup::Repo {
                    source.repository.clone()
                } else {
                    source.owner.clone()
                };
                add(key.unwrap_or_else(|| UNKNOWN.into()), &|row| {
                    add_totals(row, &total)
                });
            }
        }
    }
    let mut rows: Vec<UsageRow> = rows.into_values().map(|(row, _)| row).collect();
    if group != UsageGroup::Day {
        rows.sort_by(|a, b| {
            let size = |r: &UsageRow| r.input_tokens + r.output_tokens;
            size(b).total_cmp(&size(a)).then_with(|| a.key.cmp(&b.key))
        });
    }
    rows
}

/// What shutdown `i` adds to the fold of the ones before it. The fold decides each shutdown from
/// its predecessor alone, so the pair fold minus the predecessor's own fold is that segment.
fn segment(shutdowns: &[(Shutdown, Option<String>)], i: usize, checkpoints: bool) -> Usage {
    let current = shutdowns[i].0.clone();
    let Some(previous) = i.checked_sub(1).map(|p| shutdowns[p].0.clone()) else {
        return fold(&[current], checkpoints);
    };
    let before = fold(std::slice::from_ref(&previous), checkpoints);
    let pair = fold(&[previous, current], checkpoints);
    let mut delta = Usage {
        premium_requests: pair.premium_requests - before.premium_requests,
        ..Usage::default()
    };
    for (model, m) in &pair.models {
        let b = before.models.get(model).copied().unwrap_or_default();
        delta.models.insert(
            model.clone(),
            ModelUsage {
                requests: m.requests - b.requests,
                premium_cost: m.premium_cost - b.premium_cost,
                input_tokens: m.input_tokens - b.input_tokens,
                output_tokens: m.output_tokens - b.output_tokens,
                cache_read_tokens: m.cache_read_tokens - b.cache_read_tokens,
                cache_write_tokens: m.cache_write_tokens - b.cache_write_tokens,
                reasoning_tokens: m.reasoning_tokens - b.reasoning_tokens,
                nano_aiu: m.nano_aiu - b.nano_aiu,
            },
        );
    }
    delta
}

fn add_model(row: &mut UsageRow, m: &ModelUsage) {
    row.input_tokens += m.input_tokens;
    row.output_tokens += m.output_tokens;
    row.cache_read_tokens += m.cache_read_tokens;
    row.cache_write_tokens += m.cache_write_tokens;
    row.requests += m.requests;
}

fn add_totals(row: &mut UsageRow, usage: &Usage) {
    for m in usage.models.values() {
        add_model(row, m);
    }
    row.premium_requests += usage.premium_requests;
}

/// The UTC day of a line's `timestamp` (ISO 8601), if it has a well-formed one.
pub fn timestamp_day(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    day_of_timestamp(v.get("timestamp")?.as_str()?)
}

/// The `YYYY-MM-DD` an ISO 8601 timestamp starts with, if it starts with one.
pub fn day_of_timestamp(ts: &str) -> Option<String> {
    let day = ts.get(..10)?;
    let b = day.as_bytes();
    let well_formed = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    well_formed.then(|| day.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SessionId;
    use crate::server::usage::parse_shutdown;

    fn shutdown(ts: Option<&str>, input: u64, premium: u64) -> String {
        let ts = ts.map(|t| format!(r#","timestamp":"{t}""#)).unwrap_or_default();
        format!(
            r#"{{"type":"session.shutdown","data":{{"totalPremiumRequests":{premium},"modelMetrics":{{"m1":{{"requests":{{"count":2,"cost":{premium}}},"usage":{{"inputTokens":{input},"outputTokens":10}}}}}}}}{ts}}}"#
        )
    }

    fn source(repo: Option<&str>, owner: Option<&str>, lines: Vec<String>, cp: bool) -> UsageSource {
        UsageSource {
            session_id: SessionId::new_random(),
            repository: repo.map(String::from),
            owner: owner.map(String::from),
            started_at: 86_400_000, // 1970-01-02
            shutdowns: lines
                .iter()
                .filter_map(|l| Some((parse_shutdown(l)?, timestamp_day(l))))
                .collect(),
            has_usage_checkpoints: cp,
        }
    }

    #[test]
    fn cumulative_segments_land_on_their_own_days_and_sum_to_the_session_fold() {
        let s = source(
            Some("o/r"),
            None,
            vec![
                shutdown(Some("2026-11-01T10:00:00Z"), 100, 1),
                shutdown(Some("2026-11-03T10:00:00Z"), 250, 3),
            ],
            true,
        );
        let days = usage(std::slice::from_ref(&s), UsageGroup::Day);
        assert_eq!(days.len(), 2);
        assert_eq!(
            (days[0].key.as_str(), days[0].input_tokens),
            ("2026-11-01", 100.0)
        );
        assert_eq!(
            (days[1].key.as_str(), days[1].input_tokens),
            ("2026-11-03", 150.0)
        );
        assert_eq!(days[1].premium_requests, 2.0);
        let repo = usage(&[s], UsageGroup::Repo);
        assert_eq!(repo[0].input_tokens, 250.0);
        assert_eq!(repo[0].sessions, 1);
    }

    #[test]
    fn segments_without_checkpoints_add_and_missing_timestamps_use_the_start_day() {
        let s = source(
            None,
            Some("laptop"),
            vec![shutdown(None, 100, 1), shutdown(None, 50, 1)],
            false,
        );
        let days = usage(std::slice::from_ref(&s), UsageGroup::Day);
        assert_eq!(days.len(), 1);
        assert_eq!(
            (days[0].key.as_str(), days[0].input_tokens),
            ("1970-01-02", 150.0)
        );
        assert_eq!(days[0].sessions, 1);
        let machines = usage(&[s], UsageGroup::Machine);
        assert_eq!(machines[0].key, "laptop");
        let by_repo = usage(
            &[source(None, None, vec![shutdown(None, 1, 0)], false)],
            UsageGroup::Repo,
        );
        assert_eq!(by_repo[0].key, UNKNOWN);
    }

    #[test]
    fn groups_count_sessions_and_sort_largest_first() {
        let a = source(Some("a"), None, vec![shutdown(None, 10, 1)], false);
        let b = source(Some("b"), None, vec![shutdown(None, 500, 1)], false);
        let c = source(
            Some("b"),
            None,
            vec![shutdown(None, 5, 1), "garbage".into()],
            false,
        );
        let rows = usage(&[a, b, c], UsageGroup::Repo);
        assert_eq!(
            rows.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert_eq!((rows[0].sessions, rows[0].input_tokens), (2, 505.0));
        let models = usage(&rows_source(), UsageGroup::Model);
        assert_eq!((models[0].key.as_str(), models[0].premium_requests), ("m1", 4.0));
    }

    fn rows_source() -> Vec<UsageSource> {
        vec![source(None, None, vec![shutdown(None, 1, 4)], false)]
    }

    #[test]
    fn only_well_formed_timestamps_name_a_day() {
        assert_eq!(
            timestamp_day(r#"{"timestamp":"2026-01-02T00:00:00Z"}"#).as_deref(),
            Some("2026-01-02")
        );
        assert_eq!(timestamp_day(r#"{"timestamp":"<b>x</b>-99-99"}"#), None);
        assert_eq!(timestamp_day(r#"{"timestamp":"2026"}"#), None);
        assert_eq!(timestamp_day("not json"), None);
    }
}
