//! The web UI's reads on PostgreSQL: plain indexed queries, and search over each line's `search`
//! vector of `kcap_search_text(text)` (migrations 3, 5 and 6): computed once per line by the
//! search indexer moments after the line is stored (off the ingest path, as on SQLite), kept in
//! the row under a GIN index, so a match is never re-parsed and every replica searches the same
//! lines.

use std::collections::HashMap;

use postgres::types::ToSql;

use super::aggregate::timestamp_day;
use super::filter_sql::{conditions, Param};
use super::model::{
    Facets, Line, LinePage, Paging, ReadError, ReadModel, SearchHit, SessionFilter, SessionItem, SessionPage,
    UsageSource,
};
use super::search;
use crate::ids::SessionId;
use crate::server::storage::columns::{session_of, signed};
use crate::server::storage::postgres::{key, summary_by_id, Postgres};
use crate::server::storage::StorageError;
use crate::server::usage::Shutdown;

fn db(e: postgres::Error) -> StorageError {
    StorageError::Database(e.to_string())
}

fn text_of(bytes: Option<Vec<u8>>) -> String {
    bytes
        .map(|b| String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
        .unwrap_or_default()
}

/// `WHERE …` for a filter (see [`conditions`]; parameters from `$first`), with its parameters.
fn filter_sql(f: &SessionFilter, first: usize) -> (String, Vec<Box<dyn ToSql + Sync>>) {
    let mut clauses = vec!["TRUE".to_string()];
    let mut values: Vec<Box<dyn ToSql + Sync>> = Vec::new();
    for (clause, param) in conditions(f) {
        clauses.push(clause.replace('?', &format!("${}", first + values.len())));
        let value: Box<dyn ToSql + Sync> = match param {
            Param::Text(t) => Box::new(t),
            Param::Integer(i) => Box::new(i),
        };
        values.push(value);
    }
    (clauses.join(" AND "), values)
}

fn refs(values: &[Box<dyn ToSql + Sync>]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v.as_ref()).collect()
}

/// A tsquery: every term as a prefix (terms are letters and digits only).
fn ts_query(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("'{}':*", t.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(" & ")
}

impl Postgres {
    fn reading<T>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, StorageError>,
    ) -> Result<T, ReadError> {
        self.with(f).map_err(ReadError::from)
    }

    fn ids_and_total(
        c: &mut postgres::Client,
        filter: &SessionFilter,
        paging: Paging,
    ) -> Result<(Vec<SessionId>, u64), StorageError> {
        let (where_, values) = filter_sql(filter, 1);
        let total: i64 = c
            .query_one(
                &format!("SELECT count(*) FROM sessions WHERE {where_}"),
                &refs(&values),
            )
            .map_err(db)?
            .get(0);
        let n = values.len();
        let mut params = refs(&values);
        let (limit, offset) = (i64::from(paging.limit), signed(paging.offset));
        params.push(&limit);
        params.push(&offset);
        let ids = c
            .query(
                &format!(
                    "SELECT id FROM sessions WHERE {where_} ORDER BY first_seen DESC, id DESC LIMIT ${} OFFSET ${}",
                    n + 1,
                    n + 2
                ),
                &params,
            )
            .map_err(db)?
            .iter()
            .map(|r| session_of(r.get::<_, Vec<u8>>(0)))
            .collect();
        Ok((ids, total.max(0) as u64))
    }

    /// One indexing step; `locking` says what to do with rows another indexer holds.
    fn index_step(&self, locking: &str) -> Result<usize, ReadError> {
        self.transaction(|tx| {
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .map_err(db)?;
            let filled = tx
                .execute(
                    &format!(
                        "UPDATE lines SET search = to_tsvector('simple', kcap_search_text(text)) \
                         WHERE ctid = ANY(ARRAY(SELECT ctid FROM lines WHERE search IS NULL AND NOT blank \
                         LIMIT $1 {locking}))"
                    ),
                    &[&INDEX_STEP],
                )
                .map_err(db)?;
            Ok(filled as usize)
        })
        .map_err(ReadError::from)
    }
}

/// Lines one indexing step fills (one short transaction).
const INDEX_STEP: i64 = 500;

impl ReadModel for Postgres {
    /// Fills the search vector of up to [`INDEX_STEP`] lines still without one. Rows another
    /// replica's indexer holds are skipped (SKIP LOCKED), so replicas share the work. The commit
    /// does not wait for its WAL flush: a lost step is redone, since its lines stay unindexed.
    fn index_pending(&self) -> Result<usize, ReadError> {
        self.index_step("FOR NO KEY UPDATE SKIP LOCKED")
    }

    /// Waits for rows another indexer holds; once it committed they no longer match
    /// `search IS NULL` (the lock re-checks the row's newest version) and are left out.
    fn index_pending_waiting(&self) -> Result<usize, ReadError> {
        self.index_step("FOR NO KEY UPDATE")
    }

    /// Counts lines still without a search vector, but stops just past
    /// [`BACKLOG_NO_PAUSE`](super::indexer::BACKLOG_NO_PAUSE): whether the indexer is that far
    /// behind is all it asks, and the partial index `lines_unindexed` holds exactly these rows,
    /// so the count costs at most that many index entries. (It answered 0 before: the indexer
    /// then gave way to ingest for ever, and search could fall behind without bound.)
    fn index_backlog(&self) -> Result<u64, ReadError> {
        let cap = super::indexer::BACKLOG_NO_PAUSE as i64 + 1;
        self.reading(|c| {
            c.query_one(
                "SELECT count(*) FROM (SELECT 1 FROM lines WHERE search IS NULL AND NOT blank LIMIT $1) waiting",
                &[&cap],
            )
            .map(|r| r.get::<_, i64>(0) as u64)
            .map_err(db)
        })
    }

    fn list_sessions(&self, filter: &SessionFilter, paging: Paging) -> Result<SessionPage, ReadError> {
        self.reading(|c| {
            let (ids, total) = Self::ids_and_total(c, filter, paging)?;
            let mut sessions = Vec::with_capacity(ids.len());
            for id in ids {
                sessions.extend(summary_by_id(c, id)?.map(SessionItem::from));
            }
            Ok(SessionPage { sessions, total })
        })
    }

    fn filtered_ids(
        &self,
        filter: &SessionFilter,
        paging: Paging,
    ) -> Result<(Vec<SessionId>, u64), ReadError> {
        self.reading(|c| Self::ids_and_total(c, filter, paging))
    }

    fn session_item(&self, id: SessionId) -> Result<Option<SessionItem>, ReadError> {
        self.reading(|c| Ok(summary_by_id(c, id)?.map(SessionItem::from)))
    }

    fn line_page(&self, id: SessionId, from: u64, limit: u32) -> Result<LinePage, ReadError> {
        self.reading(|c| {
            let mut lines: Vec<Line> = c
                .query(
                    "SELECT n, text FROM lines WHERE session = $1 AND n >= $2 AND NOT blank \
                     AND text IS NOT NULL ORDER BY n LIMIT $3",
                    &[&key(id), &signed(from), &(i64::from(limit) + 1)],
                )
                .map_err(db)?
                .iter()
                .map(|r| Line {
                    n: r.get::<_, i64>(0) as u64,
                    text: text_of(r.get(1)),
                })
                .collect();
            let more = lines.len() > limit as usize;
            lines.truncate(limit as usize);
            Ok(LinePage { lines, more })
        })
    }

    fn line_text(&self, id: SessionId, n: u64) -> Result<Option<String>, ReadError> {
        self.reading(|c| {
            Ok(c.query_opt(
                "SELECT text FROM lines WHERE session = $1 AND n = $2 AND NOT blank AND text IS NOT NULL",
                &[&key(id), &signed(n)],
            )
            .map_err(db)?
            .map(|r| text_of(r.get(0))))
        })
    }

    fn search_lines(&self, query: &str, paging: Paging) -> Result<Vec<SearchHit>, ReadError> {
        let terms = search::terms(query)?;
        let tsq = ts_query(&terms);
        // A total order (sessions starting in the same millisecond are told apart by id), so
        // pages taken one after another never repeat or skip a line.
        self.reading(|c| {
            let rows = c
                .query(
                    "SELECT l.session, l.n, l.text, s.first_seen, coalesce(s.repository, s.cwd) \
                     FROM lines l JOIN sessions s ON s.id = l.session \
                     WHERE NOT l.blank AND l.search @@ to_tsquery('simple', $1) \
                     ORDER BY s.first_seen DESC, s.id DESC, l.n DESC LIMIT $2 OFFSET $3",
                    &[&tsq, &i64::from(paging.limit), &signed(paging.offset)],
                )
                .map_err(db)?;
            Ok(rows
                .iter()
                .map(|r| {
                    let text = text_of(r.get(2));
                    let searchable = search::search_text(&text);
                    SearchHit {
                        session_id: session_of(r.get::<_, Vec<u8>>(0)),
                        n: r.get::<_, i64>(1) as u64,
                        kind: search::kind_of(&text),
                        snippet: search::snippet(&searchable, &terms),
                        repository: r.get(4),
                        started_at: r.get::<_, i64>(3) as u64,
                    }
                })
                .collect())
        })
    }

    fn usage_sources(&self, filter: &SessionFilter) -> Result<Vec<UsageSource>, ReadError> {
        let (where_, values) = filter_sql(filter, 1);
        self.reading(|c| {
            let mut sources: Vec<UsageSource> = c
                .query(
                    &format!(
                        "SELECT id, coalesce(repository, cwd), owner, first_seen, has_usage_checkpoints \
                         FROM sessions WHERE {where_} ORDER BY first_seen DESC"
                    ),
                    &refs(&values),
                )
                .map_err(db)?
                .iter()
                .map(|r| UsageSource {
                    session_id: session_of(r.get::<_, Vec<u8>>(0)),
                    repository: r.get(1),
                    owner: r.get(2),
                    started_at: r.get::<_, i64>(3) as u64,
                    shutdowns: Vec::new(),
                    has_usage_checkpoints: r.get(4),
                })
                .collect();
            let index: HashMap<SessionId, usize> =
                sources.iter().enumerate().map(|(i, s)| (s.session_id, i)).collect();
            let rows = c
                .query(
                    &format!(
                        "SELECT sh.session, sh.usage, l.text FROM shutdowns sh \
                         LEFT JOIN lines l ON l.session = sh.session AND l.n = sh.n \
                         WHERE sh.session IN (SELECT id FROM sessions WHERE {where_}) ORDER BY sh.session, sh.n"
                    ),
                    &refs(&values),
                )
                .map_err(db)?;
            for r in &rows {
                let Some(&i) = index.get(&session_of(r.get::<_, Vec<u8>>(0))) else {
                    continue;
                };
                let Ok(shutdown) = serde_json::from_str::<Shutdown>(&r.get::<_, String>(1)) else {
                    continue;
                };
                let day = timestamp_day(&text_of(r.get(2)));
                sources[i].shutdowns.push((shutdown, day));
            }
            Ok(sources)
        })
    }

    fn facets(&self) -> Result<Facets, ReadError> {
        self.reading(|c| {
            let mut list = |sql: &str| -> Result<Vec<String>, StorageError> {
                Ok(c.query(sql, &[]).map_err(db)?.iter().map(|r| r.get(0)).collect())
            };
            Ok(Facets {
                agents: list(
                    "SELECT DISTINCT agent FROM sessions WHERE agent IS NOT NULL ORDER BY 1 LIMIT 500",
                )?,
                repositories: list(
                    "SELECT DISTINCT coalesce(repository, cwd) FROM sessions \
                     WHERE coalesce(repository, cwd) IS NOT NULL ORDER BY 1 LIMIT 500",
                )?,
                machines: list(
                    "SELECT DISTINCT owner FROM sessions WHERE owner IS NOT NULL ORDER BY 1 LIMIT 500",
                )?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsqueries_are_quoted_prefixes_joined_by_and() {
        assert_eq!(ts_query(&["foo".into(), "bar".into()]), "'foo':* & 'bar':*");
    }
}
