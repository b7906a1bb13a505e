//! Query strings shared by the pages and the API, parsed leniently into typed filters: every
//! value arrives as text, and a bad one gets a message saying which and why.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::format::parse_day;
use super::model::{Paging, SessionFilter};

/// Filters and paging as the list, usage page and API take them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FilterQuery {
    pub agent: Option<String>,
    pub repository: Option<String>,
    pub machine: Option<String>,
    /// First day (`YYYY-MM-DD`, UTC), inclusive.
    pub from: Option<String>,
    /// Last day (`YYYY-MM-DD`, UTC), inclusive.
    pub to: Option<String>,
    pub offset: Option<String>,
    pub limit: Option<String>,
}

const DAY_MS: u64 = 86_400_000;

/// A query string for the JSON API: like axum's `Query`, but a query it cannot read (a repeated
/// field, say) is a JSON error like every other API error, not axum's plain-text 400.
#[derive(Debug, Clone, Default)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned> ApiQuery<T> {
    /// Parses `uri`'s query string, or says why not.
    pub fn from_uri(uri: &Uri) -> Result<Self, String> {
        Query::<T>::try_from_uri(uri)
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| format!("bad query string: {}", e.body_text()))
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        Self::from_uri(&parts.uri).map_err(|m| super::api_error(StatusCode::BAD_REQUEST, &m))
    }
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// A whole number from a query value; `default` when absent or empty.
pub fn number(name: &str, v: &Option<String>, default: u64) -> Result<u64, String> {
    match nonempty(v) {
        None => Ok(default),
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| format!("{name} must be a whole number, not {:?}", truncated(&s))),
    }
}

fn truncated(s: &str) -> String {
    s.chars().take(40).collect()
}

impl FilterQuery {
    /// The session filter; an error names the bad field.
    pub fn filter(&self) -> Result<SessionFilter, String> {
        let day = |name: &str, v: &Option<String>| -> Result<Option<u64>, String> {
            match nonempty(v) {
                None => Ok(None),
                Some(s) => parse_day(&s)
                    .map(Some)
                    .ok_or_else(|| format!("{name} must be a date as YYYY-MM-DD, not {:?}", truncated(&s))),
            }
        };
        Ok(SessionFilter {
            agent: nonempty(&self.agent),
            repository: nonempty(&self.repository),
            machine: nonempty(&self.machine),
            from: day("from", &self.from)?,
            to: day("to", &self.to)?.map(|d| d + DAY_MS),
        })
    }

    /// Whether any filter or an offset is given (the plain listing takes `limit` alone).
    pub fn narrows(&self) -> bool {
        [
            &self.agent,
            &self.repository,
            &self.machine,
            &self.from,
            &self.to,
            &self.offset,
        ]
        .iter()
        .any(|v| nonempty(v).is_some())
    }

    /// The paging window, `limit` defaulting to `default_limit`.
    pub fn paging(&self, default_limit: u32) -> Result<Paging, String> {
        let offset = number("offset", &self.offset, 0)?;
        let limit = number("limit", &self.limit, u64::from(default_limit))?;
        Ok(Paging::new(offset, limit.min(u64::from(u32::MAX)) as u32))
    }

    /// This query as a query string without `offset` (for paging and group links).
    pub fn without_offset(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("agent", &self.agent),
            ("repository", &self.repository),
            ("machine", &self.machine),
            ("from", &self.from),
            ("to", &self.to),
            ("limit", &self.limit),
        ] {
            if let Some(v) = nonempty(v) {
                parts.push(format!("{k}={}", super::paths::encode(&v)));
            }
        }
        parts.join("&")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_bad_values_are_named() {
        let q = FilterQuery {
            agent: Some(" copilot ".into()),
            repository: Some("".into()),
            from: Some("2026-11-01".into()),
            to: Some("2026-11-01".into()),
            ..FilterQuery::default()
        };
        let f = q.filter().unwrap();
        assert_eq!(f.agent.as_deref(), Some("copilot"));
        assert_eq!(f.repository, None);
        assert_eq!(
            f.to.unwrap() - f.from.unwrap(),
            DAY_MS,
            "the last day is included"
        );
        let bad = FilterQuery {
            to: Some("yesterday".into()),
            ..FilterQuery::default()
        };
        assert!(bad.filter().unwrap_err().starts_with("to must be a date"));
        let bad = FilterQuery {
            limit: Some("-1".into()),
            ..FilterQuery::default()
        };
        assert!(bad.paging(50).unwrap_err().starts_with("limit must be"));
        let big = FilterQuery {
            limit: Some("999999".into()),
            ..FilterQuery::default()
        };
        assert_eq!(big.paging(50).unwrap().limit, super::super::model::MAX_LIMIT);
        assert_eq!(q.without_offset(), "agent=copilot&from=2026-11-01&to=2026-11-01");
    }
}
