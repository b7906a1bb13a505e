//! The web UI's reads on SQLite: plain indexed queries, and FTS5 for search.
//!
//! The search index is filled off the ingest path ([`ReadModel::index_pending`], driven by
//! [`super::indexer`]) so that storing lines never pays for tokenizing them; search sees a line
//! a moment after it is stored. The index is a database file of its own (attached to read
//! connections as `search`, see [`crate::server::storage::sqlite_search`]): an index step reads
//! lines on a read connection and writes only that file, so batches never wait for it.

use std::collections::HashMap;

use rusqlite::types::Value;
use rusqlite::{params_from_iter, OptionalExtension};

use super::aggregate::day_of_timestamp;
use super::filter_sql::{conditions, Param};
use super::model::{
    Facets, Line, LinePage, Paging, ReadError, ReadModel, SearchHit, SessionFilter, SessionItem, SessionPage,
    UsageSource,
};
use super::search;
use crate::ids::SessionId;
use crate::server::storage::columns::{session_of, signed, SESSION_ROW};
use crate::server::storage::sqlite::{row, sid, summary_by_id, summary_of, Sqlite};
use crate::server::storage::{sqlite_search, StorageError};
use crate::server::usage::Shutdown;

/// Lines the indexer looks at per step, at most.
const INDEX_STEP: i64 = 500;
/// Readable text an index step holds in memory, at most (a line contributes up to 256 KiB).
/// FTS5 keeps a step's tokens in memory until its commit, so this also bounds that.
const INDEX_STEP_BYTES: usize = 2 * 1024 * 1024;

/// The readable text of `lines.text` (see [`search::search_text`]; the same fields, in SQL).
const SEARCH_TEXT: &str = "substr(CASE WHEN json_valid(text) THEN concat_ws(char(10), \
    json_extract(text, '$.data.content'), json_extract(text, '$.data.reasoningText'), \
    json_extract(text, '$.data.message'), json_extract(text, '$.data.summary'), \
    json_extract(text, '$.data.toolName'), json_extract(text, '$.data.agentName'), \
    json_extract(text, '$.data.arguments'), json_extract(text, '$.data.result'), \
    json_extract(text, '$.data.error')) ELSE text END, 1, 262144)";

/// `WHERE …` for a filter (see [`conditions`]), with its parameters.
fn filter_sql(f: &SessionFilter) -> (String, Vec<Value>) {
    let mut clauses = vec!["1 = 1"];
    let mut values = Vec::new();
    for (clause, param) in conditions(f) {
        clauses.push(clause);
        values.push(match param {
            Param::Text(t) => Value::Text(t),
            Param::Integer(i) => Value::Integer(i),
        });
    }
    (clauses.join(" AND "), values)
}

/// An FTS5 query: every term as a quoted prefix.
fn fts_query(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("\"{}\"*", t.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One page of the sessions `filter` selects, newest first, each read by `read` from the columns
/// `select` (`SELECT … FROM sessions`) names, with how many it selects in all. The list page and
/// the filtered API listing page alike, so they can never disagree on order or count.
fn filtered_page<T>(
    c: &rusqlite::Connection,
    filter: &SessionFilter,
    paging: Paging,
    select: &str,
    read: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<(Vec<T>, u64)> {
    let (where_, mut values) = filter_sql(filter);
    let total: i64 = c.query_row(
        &format!("SELECT count(*) FROM sessions WHERE {where_}"),
        params_from_iter(values.iter()),
        |r| r.get(0),
    )?;
    values.push(Value::Integer(i64::from(paging.limit)));
    values.push(Value::Integer(signed(paging.offset)));
    let rows = c
        .prepare_cached(&format!(
            "{select} WHERE {where_} ORDER BY first_seen DESC, id DESC LIMIT ? OFFSET ?"
        ))?
        .query_map(params_from_iter(values.iter()), read)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((rows, total.max(0) as u64))
}

impl Sqlite {
    fn reading<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, ReadError> {
        self.read(f).map_err(ReadError::from)
    }
}

impl ReadModel for Sqlite {
    fn list_sessions(&self, filter: &SessionFilter, paging: Paging) -> Result<SessionPage, ReadError> {
        self.reading(|c| {
            let (rows, total) = filtered_page(c, filter, paging, SESSION_ROW, row)?;
            let sessions = rows
                .into_iter()
                .map(|r| summary_of(c, r).map(SessionItem::from))
                .collect::<rusqlite::Result<_>>()?;
            Ok(SessionPage { sessions, total })
        })
    }

    fn filtered_ids(
        &self,
        filter: &SessionFilter,
        paging: Paging,
    ) -> Result<(Vec<SessionId>, u64), ReadError> {
        self.reading(|c| {
            filtered_page(c, filter, paging, "SELECT id FROM sessions", |r| {
                r.get::<_, Vec<u8>>(0).map(session_of)
            })
        })
    }

    fn session_item(&self, id: SessionId) -> Result<Option<SessionItem>, ReadError> {
        self.reading(|c| Ok(summary_by_id(c, id)?.map(SessionItem::from)))
    }

    fn line_page(&self, id: SessionId, from: u64, limit: u32) -> Result<LinePage, ReadError> {
        self.reading(|c| {
            let mut lines: Vec<Line> = c
                .prepare_cached(
                    "SELECT n, text FROM lines WHERE session = ?1 AND n >= ?2 AND blank = 0 \
                     AND text IS NOT NULL ORDER BY n LIMIT ?3",
                )?
                .query_map(
                    rusqlite::params![sid(id), signed(from), i64::from(limit) + 1],
                    |r| {
                        Ok(Line {
                            n: r.get::<_, i64>(0)? as u64,
                            text: r.get(1)?,
                        })
                    },
                )?
                .collect::<rusqlite::Result<_>>()?;
            let more = lines.len() > limit as usize;
            lines.truncate(limit as usize);
            Ok(LinePage { lines, more })
        })
    }

    fn line_text(&self, id: SessionId, n: u64) -> Result<Option<String>, ReadError> {
        self.reading(|c| {
            c.prepare_cached("SELECT text FROM lines WHERE session = ?1 AND n = ?2 AND blank = 0")?
                .query_row(rusqlite::params![sid(id), signed(n)], |r| {
                    r.get::<_, Option<String>>(0)
                })
                .optional()
                .map(Option::flatten)
        })
    }

    fn search_lines(&self, query: &str, paging: Paging) -> Result<Vec<SearchHit>, ReadError> {
        let terms = search::terms(query)?;
        let fts = fts_query(&terms);
        self.reading(|c| {
            // The FTS table drives the loop in rowid order (newest stored first), so a page of
            // hits costs the page, not every match.
            c.prepare_cached(
                "SELECT l.session, l.n, l.text, s.first_seen, coalesce(s.repository, s.cwd) \
                 FROM search.line_search f CROSS JOIN lines l ON l.rowid = f.rowid \
                 CROSS JOIN sessions s ON s.id = l.session \
                 WHERE f.line_search MATCH ?1 ORDER BY f.rowid DESC LIMIT ?2 OFFSET ?3",
            )?
            .query_map(
                rusqlite::params![fts, i64::from(paging.limit), signed(paging.offset)],
                |r| {
                    let text: String = r.get(2)?;
                    let searchable = search::search_text(&text);
                    Ok(SearchHit {
                        session_id: session_of(r.get::<_, Vec<u8>>(0)?),
                        n: r.get::<_, i64>(1)? as u64,
                        kind: search::kind_of(&text),
                        snippet: search::snippet(&searchable, &terms),
                        repository: r.get(4)?,
                        started_at: r.get::<_, i64>(3)? as u64,
                    })
                },
            )?
            .collect()
        })
    }

    fn usage_sources(&self, filter: &SessionFilter) -> Result<Vec<UsageSource>, ReadError> {
        let (where_, values) = filter_sql(filter);
        self.reading(|c| {
            let mut sources: Vec<UsageSource> = c
                .prepare(&format!(
                    "SELECT id, coalesce(repository, cwd), owner, first_seen, has_usage_checkpoints \
                     FROM sessions WHERE {where_} ORDER BY first_seen DESC"
                ))?
                .query_map(params_from_iter(values.iter()), |r| {
                    Ok(UsageSource {
                        session_id: session_of(r.get::<_, Vec<u8>>(0)?),
                        repository: r.get(1)?,
                        owner: r.get(2)?,
                        started_at: r.get::<_, i64>(3)? as u64,
                        shutdowns: Vec::new(),
                        has_usage_checkpoints: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let index: HashMap<SessionId, usize> = sources
                .iter()
                .enumerate()
                .map(|(i, s)| (s.session_id, i))
                .collect();
            let mut stmt = c.prepare(&format!(
                "SELECT sh.session, sh.usage, \
                 CASE WHEN json_valid(l.text) AND json_type(l.text, '$.timestamp') = 'text' \
                 THEN substr(json_extract(l.text, '$.timestamp'), 1, 10) END \
                 FROM shutdowns sh LEFT JOIN lines l ON l.session = sh.session AND l.n = sh.n \
                 WHERE sh.session IN (SELECT id FROM sessions WHERE {where_}) ORDER BY sh.session, sh.n"
            ))?;
            let mut rows = stmt.query(params_from_iter(values.iter()))?;
            while let Some(r) = rows.next()? {
                let Some(&i) = index.get(&session_of(r.get::<_, Vec<u8>>(0)?)) else {
                    continue;
                };
                let Ok(shutdown) = serde_json::from_str::<Shutdown>(&r.get::<_, String>(1)?) else {
                    continue;
                };
                let day = r.get::<_, Option<String>>(2)?.and_then(|d| day_of_timestamp(&d));
                sources[i].shutdowns.push((shutdown, day));
            }
            Ok(sources)
        })
    }

    fn facets(&self) -> Result<Facets, ReadError> {
        self.reading(|c| {
            let list = |sql: &str| -> rusqlite::Result<Vec<String>> {
                c.prepare_cached(sql)?
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect()
            };
            Ok(Facets {
                agents: list("SELECT DISTINCT agent FROM sessions WHERE agent IS NOT NULL ORDER BY 1 LIMIT 500")?,
                repositories: list(
                    "SELECT DISTINCT coalesce(repository, cwd) AS p FROM sessions WHERE p IS NOT NULL ORDER BY 1 LIMIT 500",
                )?,
                machines: list("SELECT DISTINCT owner FROM sessions WHERE owner IS NOT NULL ORDER BY 1 LIMIT 500")?,
            })
        })
    }

    fn index_backlog(&self) -> Result<u64, ReadError> {
        // Rowids of lines that exist are dense (lines are never deleted): the difference is the
        // number of lines the indexer has not reached.
        Ok(self.read(|c| {
            c.query_row(
                "SELECT max(0, coalesce((SELECT max(rowid) FROM lines), 0) - \
                 (SELECT last_rowid FROM search.progress WHERE id = 0))",
                [],
                |r| r.get::<_, i64>(0),
            )
        })? as u64)
    }

    fn index_pending(&self) -> Result<usize, ReadError> {
        let db = |e: rusqlite::Error| StorageError::Database(e.to_string());
        self.write_search(|tx| self.read(|c| sqlite_search::verify(tx, c)))?;
        let redone = self.write_search(|tx| {
            let (last, applied): (i64, i64) = tx
                .query_row(
                    "SELECT last_rowid, redo_seq FROM progress WHERE id = 0",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(db)?;
            // Lines filled in after the indexer passed them (their rowid is at or below `last`):
            // indexed again. Those above `last` are taken by the scan below, text and all.
            let redo: Vec<(i64, i64, Option<String>)> = self.read(|c| {
                c.prepare_cached(&format!(
                    "SELECT r.seq, r.line, CASE WHEN r.line <= ?1 AND l.blank = 0 THEN {SEARCH_TEXT} END \
                     FROM line_search_redo r LEFT JOIN lines l ON l.rowid = r.line \
                     WHERE r.seq > ?2 ORDER BY r.seq LIMIT ?3"
                ))?
                .query_map(rusqlite::params![last, applied, INDEX_STEP], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect()
            })?;
            for (_, rowid, body) in &redo {
                if *rowid > last {
                    continue;
                }
                tx.execute("DELETE FROM line_search WHERE rowid = ?1", [rowid])
                    .map_err(db)?;
                if let Some(body) = body {
                    tx.execute(
                        "INSERT INTO line_search (rowid, body) VALUES (?1, ?2)",
                        rusqlite::params![rowid, body],
                    )
                    .map_err(db)?;
                }
            }
            let applied = redo.last().map_or(applied, |(seq, _, _)| *seq);
            tx.execute("UPDATE progress SET redo_seq = ?1 WHERE id = 0", [applied])
                .map_err(db)?;
            Ok((redo.len(), applied))
        })?;
        self.prune_redo(redone.1)?;
        let redone = redone.0;
        let scanned = self.write_search(|tx| {
            let last: i64 = tx
                .query_row("SELECT last_rowid FROM progress WHERE id = 0", [], |r| r.get(0))
                .map_err(db)?;
            // Read on a read connection (the JSON work included), so the store's writer is never
            // taken. Rowids only grow (lines are never deleted), so a snapshot sees every line
            // below the newest rowid it holds.
            let (upto, seen, bodies, at) = self.read(|c| {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT rowid, CASE WHEN blank = 0 AND text IS NOT NULL THEN {SEARCH_TEXT} END, session, n, id \
                     FROM lines WHERE rowid > ?1 ORDER BY rowid LIMIT ?2"
                ))?;
                let mut rows = stmt.query(rusqlite::params![last, INDEX_STEP])?;
                let (mut upto, mut seen, mut bytes, mut bodies) = (last, 0usize, 0usize, Vec::new());
                let mut at: Option<(Vec<u8>, i64, Option<Vec<u8>>)> = None;
                while let Some(r) = rows.next()? {
                    upto = r.get::<_, i64>(0)?;
                    at = Some((r.get(2)?, r.get(3)?, r.get(4)?));
                    seen += 1;
                    if let Some(body) = r.get::<_, Option<String>>(1)? {
                        bytes += body.len();
                        bodies.push((upto, body));
                    }
                    if bytes >= INDEX_STEP_BYTES {
                        break;
                    }
                }
                Ok((upto, seen, bodies, at))
            })?;
            if seen == 0 {
                return Ok(0);
            }
            let mut insert = tx
                .prepare_cached("INSERT INTO line_search (rowid, body) VALUES (?1, ?2)")
                .map_err(db)?;
            for (rowid, body) in &bodies {
                insert.execute(rusqlite::params![rowid, body]).map_err(db)?;
            }
            let (session, n, event) = match at {
                Some((s, n, e)) => (Some(s), Some(n), e),
                None => (None, None, None),
            };
            tx.execute(
                "UPDATE progress SET last_rowid = ?1, last_session = ?2, last_n = ?3, last_event = ?4 WHERE id = 0",
                rusqlite::params![upto, session, n, event],
            )
            .map_err(db)?;
            Ok(seen)
        })?;
        Ok(scanned + redone)
    }
}

impl Sqlite {
    /// Deletes the redo queue's entries up to `applied` once the index holds them durably (its
    /// file is written without an fsync per commit): lazily, when a checkpoint of the index
    /// completes; until then they stay, and an index that lost its last commits applies them
    /// again. How far it went is recorded, so an index file recording less is rebuilt.
    fn prune_redo(&self, applied: i64) -> Result<(), StorageError> {
        let db = |e: rusqlite::Error| StorageError::Database(e.to_string());
        let waiting = self.read(|c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM line_search_redo WHERE seq <= ?1)",
                [applied],
                |r| r.get::<_, bool>(0),
            )
        })?;
        if !waiting || !self.sync_search()? {
            return Ok(());
        }
        self.write(|tx| {
            tx.execute("DELETE FROM line_search_redo WHERE seq <= ?1", [applied])
                .map_err(db)?;
            tx.execute(
                "UPDATE line_search_redo_pruned SET seq = max(seq, ?1) WHERE id = 0",
                [applied],
            )
            .map_err(db)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts_terms_are_quoted_prefixes() {
        assert_eq!(fts_query(&["foo".into(), "b\"r".into()]), "\"foo\"* \"b\"\"r\"*");
    }
}
