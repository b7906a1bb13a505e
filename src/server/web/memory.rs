//! A [`ReadModel`] held in memory: the reference the pages are tested against, with the same
//! rules as the database backends (newest first, lines by number, search by word prefix, usage
//! from stored shutdown lines).

use std::collections::BTreeMap;
use std::sync::RwLock;

use super::aggregate::timestamp_day;
use super::model::{
    Facets, Line, LinePage, Paging, ReadError, ReadModel, SearchHit, SessionFilter, SessionItem, SessionPage,
    UsageSource,
};
use super::search;
use crate::ids::SessionId;
use crate::machine::Millis;
use crate::server::usage::{fold, parse_shutdown};

struct Session {
    item: SessionItem,
    agent: Option<String>,
    /// Lines by number: (the order it was stored in, across sessions; its text).
    lines: BTreeMap<u64, (u64, String)>,
}

#[derive(Default)]
struct State {
    sessions: BTreeMap<SessionId, Session>,
    stored: u64,
}

/// Sessions and their lines, in memory.
#[derive(Default)]
pub struct MemoryReads {
    state: RwLock<State>,
}

/// A session's facts before any line arrives.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    pub agent: Option<String>,
    pub repository: Option<String>,
    pub cwd: Option<String>,
    pub owner: Option<String>,
    pub started_at: Millis,
    pub ended_at: Option<Millis>,
}

impl MemoryReads {
    /// An empty model.
    pub fn new() -> MemoryReads {
        MemoryReads::default()
    }

    /// Adds (or replaces) a session with no lines.
    pub fn add_session(&self, id: SessionId, s: NewSession) {
        let item = SessionItem {
            session_id: id,
            agent: s.agent.clone(),
            repository: s.repository,
            cwd: s.cwd,
            owner: s.owner,
            started_at: s.started_at,
            ended_at: s.ended_at,
            last_seen: s.started_at,
            lines_stored: 0,
            last_line_number: -1,
            usage: Default::default(),
        };
        self.write().sessions.insert(
            id,
            Session {
                item,
                agent: s.agent,
                lines: BTreeMap::new(),
            },
        );
    }

    /// Stores line `n` of a session unless that number is taken (each line once, like the
    /// server); returns whether it was new. Unknown sessions are created.
    pub fn push_line(&self, id: SessionId, n: u64, text: &str, now: Millis) -> bool {
        let mut state = self.write();
        state.stored += 1;
        let seq = state.stored;
        let session = state.sessions.entry(id).or_insert_with(|| Session {
            item: SessionItem {
                session_id: id,
                agent: None,
                repository: None,
                cwd: None,
                owner: None,
                started_at: now,
                ended_at: None,
                last_seen: now,
                lines_stored: 0,
                last_line_number: -1,
                usage: Default::default(),
            },
            agent: None,
            lines: BTreeMap::new(),
        });
        if session.lines.contains_key(&n) {
            return false;
        }
        session.lines.insert(n, (seq, text.to_string()));
        let item = &mut session.item;
        item.lines_stored += 1;
        item.last_seen = item.last_seen.max(now);
        while session.lines.contains_key(&((item.last_line_number + 1) as u64)) {
            item.last_line_number += 1;
        }
        if parse_shutdown(text).is_some() {
            let shutdowns: Vec<_> = session
                .lines
                .values()
                .filter_map(|(_, l)| parse_shutdown(l))
                .collect();
            item.usage = fold(&shutdowns, has_checkpoints(&session.lines));
        }
        true
    }

    /// Marks a session ended at `at`.
    pub fn end_session(&self, id: SessionId, at: Millis) {
        if let Some(s) = self.write().sessions.get_mut(&id) {
            s.item.ended_at = Some(at);
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        // Plain data: a panic elsewhere cannot leave it half-updated in a way reads would trip on.
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }
}

fn has_checkpoints(lines: &BTreeMap<u64, (u64, String)>) -> bool {
    lines
        .values()
        .any(|(_, l)| search::kind_of(l).as_deref() == Some("session.usage_checkpoint"))
}

fn keeps(filter: &SessionFilter, s: &Session) -> bool {
    let item = &s.item;
    filter.agent.as_ref().is_none_or(|a| s.agent.as_ref() == Some(a))
        && filter
            .repository
            .as_deref()
            .is_none_or(|r| item.place() == Some(r))
        && filter
            .machine
            .as_ref()
            .is_none_or(|m| item.owner.as_ref() == Some(m))
        && filter.from.is_none_or(|f| item.started_at >= f)
        && filter.to.is_none_or(|t| item.started_at < t)
}

/// Newest start first; ties by id so paging is stable.
fn newest_first(sessions: &BTreeMap<SessionId, Session>) -> Vec<&Session> {
    let mut all: Vec<&Session> = sessions.values().collect();
    all.sort_by(|a, b| {
        b.item
            .started_at
            .cmp(&a.item.started_at)
            .then_with(|| b.item.session_id.cmp(&a.item.session_id))
    });
    all
}

impl ReadModel for MemoryReads {
    fn list_sessions(&self, filter: &SessionFilter, paging: Paging) -> Result<SessionPage, ReadError> {
        let state = self.read();
        let matching: Vec<&Session> = newest_first(&state.sessions)
            .into_iter()
            .filter(|s| keeps(filter, s))
            .collect();
        Ok(SessionPage {
            total: matching.len() as u64,
            sessions: matching
                .into_iter()
                .skip(paging.offset as usize)
                .take(paging.limit as usize)
                .map(|s| s.item.clone())
                .collect(),
        })
    }

    fn session_item(&self, id: SessionId) -> Result<Option<SessionItem>, ReadError> {
        Ok(self.read().sessions.get(&id).map(|s| s.item.clone()))
    }

    fn line_page(&self, id: SessionId, from: u64, limit: u32) -> Result<LinePage, ReadError> {
        let state = self.read();
        let Some(session) = state.sessions.get(&id) else {
            return Ok(LinePage::default());
        };
        let mut range = session.lines.range(from..);
        let lines: Vec<Line> = range
            .by_ref()
            .take(limit as usize)
            .map(|(n, (_, text))| Line {
                n: *n,
                text: text.clone(),
            })
            .collect();
        Ok(LinePage {
            lines,
            more: range.next().is_some(),
        })
    }

    fn line_text(&self, id: SessionId, n: u64) -> Result<Option<String>, ReadError> {
        Ok(self
            .read()
            .sessions
            .get(&id)
            .and_then(|s| s.lines.get(&n).map(|(_, t)| t.clone())))
    }

    fn search_lines(&self, query: &str, paging: Paging) -> Result<Vec<SearchHit>, ReadError> {
        let terms = search::terms(query)?;
        let state = self.read();
        let mut hits: Vec<(u64, SearchHit)> = Vec::new();
        for s in state.sessions.values() {
            for (n, (seq, text)) in &s.lines {
                let searchable = search::search_text(text);
                if search::matches(&searchable, &terms) {
                    hits.push((
                        *seq,
                        SearchHit {
                            session_id: s.item.session_id,
                            n: *n,
                            kind: search::kind_of(text),
                            snippet: search::snippet(&searchable, &terms),
                            repository: s.item.place().map(String::from),
                            started_at: s.item.started_at,
                        },
                    ));
                }
            }
        }
        hits.sort_by_key(|h| std::cmp::Reverse(h.0));
        Ok(hits
            .into_iter()
            .skip(paging.offset as usize)
            .take(paging.limit as usize)
            .map(|(_, h)| h)
            .collect())
    }

    fn usage_sources(&self, filter: &SessionFilter) -> Result<Vec<UsageSource>, ReadError> {
        let state = self.read();
        Ok(newest_first(&state.sessions)
            .into_iter()
            .filter(|s| keeps(filter, s))
            .map(|s| UsageSource {
                session_id: s.item.session_id,
                repository: s.item.place().map(String::from),
                owner: s.item.owner.clone(),
                started_at: s.item.started_at,
                shutdowns: s
                    .lines
                    .values()
                    .filter_map(|(_, l)| Some((parse_shutdown(l)?, timestamp_day(l))))
                    .collect(),
                has_usage_checkpoints: has_checkpoints(&s.lines),
            })
            .collect())
    }

    fn facets(&self) -> Result<Facets, ReadError> {
        let state = self.read();
        let mut facets = Facets::default();
        for s in state.sessions.values() {
            facets.agents.extend(s.agent.clone());
            facets.repositories.extend(s.item.place().map(String::from));
            facets.machines.extend(s.item.owner.clone());
        }
        for list in [&mut facets.agents, &mut facets.repositories, &mut facets.machines] {
            list.sort();
            list.dedup();
        }
        Ok(facets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_stored_once_and_paged_by_number() {
        let m = MemoryReads::new();
        let id = SessionId::new_random();
        assert!(m.push_line(id, 0, "a", 1));
        assert!(!m.push_line(id, 0, "a again", 2), "a line number is stored once");
        assert!(m.push_line(id, 2, "c", 3));
        assert_eq!(m.session_item(id).unwrap().unwrap().last_line_number, 0);
        assert!(m.push_line(id, 1, "b", 4));
        assert_eq!(m.session_item(id).unwrap().unwrap().last_line_number, 2);
        let page = m.line_page(id, 1, 1).unwrap();
        assert_eq!((page.lines[0].text.as_str(), page.more), ("b", true));
        assert!(!m.line_page(id, 2, 5).unwrap().more);
    }

    #[test]
    fn filters_and_paging_apply_newest_first() {
        let m = MemoryReads::new();
        let ids: Vec<SessionId> = (0..5).map(|_| SessionId::new_random()).collect();
        for (i, id) in ids.iter().enumerate() {
            m.add_session(
                *id,
                NewSession {
                    agent: Some("copilot".into()),
                    repository: Some(if i % 2 == 0 { "o/even" } else { "o/odd" }.into()),
                    owner: Some(format!("m{}", i % 3)),
                    started_at: 1000 * i as u64,
                    ..NewSession::default()
                },
            );
        }
        let even = SessionFilter {
            repository: Some("o/even".into()),
            ..SessionFilter::default()
        };
        let page = m.list_sessions(&even, Paging::new(1, 1)).unwrap();
        assert_eq!(page.total, 3);
        assert_eq!(page.sessions[0].session_id, ids[2]);
        let range = SessionFilter {
            from: Some(1000),
            to: Some(3000),
            machine: Some("m1".into()),
            ..SessionFilter::default()
        };
        let page = m.list_sessions(&range, Paging::new(0, 10)).unwrap();
        assert_eq!(
            page.sessions.iter().map(|s| s.session_id).collect::<Vec<_>>(),
            [ids[1]]
        );
        assert_eq!(m.facets().unwrap().machines, ["m0", "m1", "m2"]);
    }
}
