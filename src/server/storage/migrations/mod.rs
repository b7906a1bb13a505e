//! Versioned schema migrations, applied in order at start. Each backend has its own SQL
//! (types differ) and numbers its own versions (some changes, like storage tuning, exist on
//! one backend only). A database whose version is
//! newer than this binary knows is refused rather than written to.

/// One schema version.
pub struct Migration {
    /// 1, 2, …: applied in order, each once.
    pub version: i64,
    /// What it changes, for logs.
    pub name: &'static str,
    /// Statements separated by `;`.
    pub sql: &'static str,
}

/// SQLite's migrations (its version lives in `PRAGMA user_version`).
pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "sessions, lines, conflicts, shutdowns, notifications, tokens",
        sql: include_str!("sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "web UI: sessions by start, full-text search of lines",
        sql: include_str!("sqlite/0002_web_reads.sql"),
    },
    Migration {
        version: 3,
        name: "tokens can be revoked",
        sql: include_str!("sqlite/0003_token_revocation.sql"),
    },
    Migration {
        version: 4,
        name: "search index in a database file of its own",
        sql: include_str!("sqlite/0004_search_index_apart.sql"),
    },
    Migration {
        version: 5,
        name: "search redo queue with a sequence",
        sql: include_str!("sqlite/0005_search_redo_sequence.sql"),
    },
];

/// PostgreSQL's migrations (its version lives in the `kcap_schema` table).
pub const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "sessions, lines, conflicts, shutdowns, notifications, tokens",
        sql: include_str!("postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "line text stored uncompressed",
        sql: include_str!("postgres/0002_lines_uncompressed.sql"),
    },
    Migration {
        version: 3,
        name: "web UI: sessions by start, full-text search of lines",
        sql: include_str!("postgres/0003_web_reads.sql"),
    },
    Migration {
        version: 4,
        name: "tokens can be revoked",
        sql: include_str!("postgres/0004_token_revocation.sql"),
    },
    Migration {
        version: 5,
        name: "search: the line's text vector stored in the row, GIN-indexed",
        sql: include_str!("postgres/0005_stored_search_vector.sql"),
    },
    Migration {
        version: 6,
        name: "search: line vectors filled by the indexer, off the ingest path",
        sql: include_str!("postgres/0006_search_vector_off_the_ingest_path.sql"),
    },
];

/// The migrations still to apply to a database at `current`, or an error if it is newer than
/// anything this binary knows.
pub fn pending(all: &'static [Migration], current: i64) -> Result<&'static [Migration], String> {
    let newest = all.last().map_or(0, |m| m.version);
    if current > newest {
        return Err(format!(
            "the database is at schema version {current}, newer than this kcap knows ({newest}); upgrade kcap"
        ));
    }
    let start = all.iter().position(|m| m.version > current).unwrap_or(all.len());
    Ok(&all[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_dense_and_ordered() {
        for all in [SQLITE, POSTGRES] {
            for (i, m) in all.iter().enumerate() {
                assert_eq!(m.version, i as i64 + 1);
            }
        }
        assert_eq!(pending(SQLITE, 0).unwrap().len(), SQLITE.len());
        assert!(pending(SQLITE, SQLITE.len() as i64).unwrap().is_empty());
        assert!(pending(SQLITE, 99).is_err());
    }
}
