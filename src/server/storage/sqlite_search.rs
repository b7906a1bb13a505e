//! The SQLite store's search index, in a database file of its own beside the store
//! (`kcap.db` → `kcap.search.db`).
//!
//! SQLite has one writer per database file. With the index in the store's file, each index step
//! (hundreds of lines tokenized by FTS5) held the lock every batch needs, and a batch arriving
//! meanwhile waited for it. In a file of its own, the indexer writes while batches commit, on the
//! other core. The index is derived data: its file is written without an fsync per commit
//! (`synchronous = NORMAL`; a power loss may lose its last steps, which its progress row, written
//! in the same transactions, makes the indexer redo), and it is rebuilt from the stored lines
//! whenever it is missing or was built for another store.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

/// The schema, created if missing. `progress` says which store the index was built for and the
/// highest `lines` rowid the indexer has looked at.
const SCHEMA: &str = "
CREATE VIRTUAL TABLE IF NOT EXISTS line_search USING fts5(
    body,
    content = '',
    contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TABLE IF NOT EXISTS progress (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    store BLOB NOT NULL,
    last_rowid INTEGER NOT NULL
);";

/// Where the search index of the store at `store` lives.
pub fn path_for(store: &Path) -> PathBuf {
    store.with_extension("search.db")
}

/// Opens (creating if needed) the search index for the store whose `store_identity` token is
/// `store`, emptied if it was built for another store.
pub fn open(path: &Path, store: &[u8], busy: std::time::Duration) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(busy)?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -4000;")?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    let built_for: Option<Vec<u8>> = tx
        .query_row("SELECT store FROM progress WHERE id = 0", [], |r| r.get(0))
        .optional()?;
    if built_for.as_deref() != Some(store) {
        if built_for.is_some() {
            tracing::info!(path = %path.display(), "search index was built for another store; rebuilding it");
        }
        tx.execute("INSERT INTO line_search (line_search) VALUES ('delete-all')", [])?;
        tx.execute(
            "INSERT INTO progress (id, store, last_rowid) VALUES (0, ?1, 0) \
             ON CONFLICT (id) DO UPDATE SET store = excluded.store, last_rowid = 0",
            [store],
        )?;
    }
    tx.commit()?;
    Ok(conn)
}

/// The store's identity token (made by its migration 4).
pub fn store_token(conn: &Connection) -> rusqlite::Result<Vec<u8>> {
    conn.query_row("SELECT token FROM store_identity WHERE id = 0", [], |r| r.get(0))
}

/// Attaches the search index to a read connection as `search`, so that queries can join its
/// matches to `lines`.
pub fn attach(conn: &Connection, path: &Path) -> rusqlite::Result<()> {
    conn.execute("ATTACH DATABASE ?1 AS search", [path.to_string_lossy()])
        .map(|_| ())
}
