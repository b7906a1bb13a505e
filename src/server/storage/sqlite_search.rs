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

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};

/// The schema's version (`PRAGMA user_version` of the index file): an index file of another
/// version is emptied and rebuilt, which is always safe for derived data.
const VERSION: i64 = 3;

/// The schema, created if missing. `progress` says which store the index was built for, the
/// highest `lines` rowid the indexer has looked at, and which line (session, number, event id)
/// held that rowid: a store restored from a backup may have reused the rowid for another line since.
/// `redo_seq` is the last entry of the store's `line_search_redo` queue applied.
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
    last_rowid INTEGER NOT NULL,
    last_session BLOB,
    last_n INTEGER,
    last_event BLOB,
    redo_seq INTEGER NOT NULL DEFAULT 0
);";

/// Where the search index of the store at `store` lives.
pub fn path_for(store: &Path) -> PathBuf {
    store.with_extension("search.db")
}

/// Opens (creating if needed) the search index for the store whose `store_identity` token is
/// `store`, emptied if it was built for another store.
pub fn open(path: &Path, store: &[u8], busy: std::time::Duration) -> rusqlite::Result<Connection> {
    // Never through a symlink: the index file may be replaced or set aside, and that must not
    // happen to whatever a link points at (`check_kind` refused links before; this closes the race).
    let mut conn = Connection::open_with_flags(path, OpenFlags::default() | OpenFlags::SQLITE_OPEN_NOFOLLOW)?;
    conn.busy_timeout(busy)?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -4000;")?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version != VERSION {
        tx.execute_batch(&format!(
            "DROP TABLE IF EXISTS line_search; DROP TABLE IF EXISTS progress; PRAGMA user_version = {VERSION};"
        ))?;
    }
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
             ON CONFLICT (id) DO UPDATE SET store = excluded.store, last_rowid = 0, \
             last_session = NULL, last_n = NULL, last_event = NULL",
            [store],
        )?;
    }
    tx.commit()?;
    Ok(conn)
}

/// Checks, in the index transaction `index`, that the index still describes the store read on
/// `store`, and empties it for a rebuild when it does not; returns whether it did. A store
/// restored from a backup keeps its identity, so the identity check in [`open`] trusts an index
/// built further: its progress may be past the store's newest line (rowids it passed would be
/// reused by new lines, never indexed, while its entries name the old lines), or new lines may
/// already have taken those rowids, which the line recorded at the progress point reveals. Two
/// indexed lookups: cheap enough for every step.
pub fn verify(index: &Transaction<'_>, store: &Connection) -> rusqlite::Result<bool> {
    type Progress = (i64, Option<Vec<u8>>, Option<i64>, Option<Vec<u8>>);
    let (last, session, n, event): Progress = index.query_row(
        "SELECT last_rowid, last_session, last_n, last_event FROM progress WHERE id = 0",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let (applied, pruned, issued): (i64, i64, i64) = (
        index.query_row("SELECT redo_seq FROM progress WHERE id = 0", [], |r| r.get(0))?,
        store.query_row("SELECT seq FROM line_search_redo_pruned WHERE id = 0", [], |r| {
            r.get(0)
        })?,
        store.query_row(
            "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'line_search_redo'), 0)",
            [],
            |r| r.get(0),
        )?,
    );
    // Queue entries the index never applied were deleted (an older index file), or the index
    // applied entries this store never issued (a restored store): either way it cannot be
    // trusted.
    if applied < pruned || applied > issued.max(pruned) {
        tracing::warn!(
            applied,
            pruned,
            issued,
            "the search index missed filled-in lines; rebuilding it"
        );
        reset(index, pruned)?;
        return Ok(true);
    }
    if last == 0 {
        return Ok(false);
    }
    let newest: i64 = store.query_row("SELECT coalesce(max(rowid), 0) FROM lines", [], |r| r.get(0))?;
    let at: Option<(Vec<u8>, i64, Option<Vec<u8>>)> = store
        .query_row("SELECT session, n, id FROM lines WHERE rowid = ?1", [last], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    // The same session and line number can come back at the same rowid with other content (the
    // client resends after a restore): the event id tells them apart. A line that was blank when
    // indexed has no event id yet (it may be filled in since), so its place has to do.
    let same = match (&at, session, n) {
        (Some((s, k, id)), Some(session), Some(n)) => {
            *s == session && *k == n && (event.is_none() || *id == event)
        }
        _ => false,
    };
    if last <= newest && same {
        return Ok(false);
    }
    tracing::warn!(
        indexed_upto = last,
        store_newest = newest,
        "the search index is ahead of the store or names other lines (a store restored from a backup?); rebuilding it"
    );
    reset(index, pruned)?;
    Ok(true)
}

/// Empties the index and its progress (the store it was built for stays). Queue entries up to
/// `pruned` count as applied: the rebuild reads every line's current text.
fn reset(index: &Transaction<'_>, pruned: i64) -> rusqlite::Result<()> {
    index.execute("INSERT INTO line_search (line_search) VALUES ('delete-all')", [])?;
    index.execute(
        "UPDATE progress SET last_rowid = 0, last_session = NULL, last_n = NULL, last_event = NULL, \
         redo_seq = ?1 WHERE id = 0",
        [pruned],
    )?;
    Ok(())
}

/// Refuses an index path that is not a regular file (a directory, a symlink, even a broken one,
/// a device), with an error that names it and says it may be deleted: the store beside it is what
/// must never be deleted, and an error naming only the store once led that way.
pub fn check_kind(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(()),
        Ok(m) => Err(format!(
            "the search index {} is not a regular file ({}); it is a rebuildable index, not the \
             store: delete it and kcap serve rebuilds it from the stored lines",
            path.display(),
            if m.file_type().is_dir() {
                "a directory"
            } else if m.file_type().is_symlink() {
                "a symlink"
            } else {
                "a special file"
            }
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!(
            "cannot inspect the search index {}: {e}; it is a rebuildable index and may be deleted",
            path.display()
        )),
    }
}

/// Whether `e`, from [`open`], says the index file is not a usable database.
pub fn is_unusable(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

/// Renames an unusable index file (and its WAL and shared-memory files) aside as
/// `<name>.corrupt-<unix seconds>`, so that a new one is built; kept rather than deleted for
/// whoever wants to look at it.
pub fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = PathBuf::from(format!("{}.corrupt-{secs}", path.display()));
    std::fs::rename(path, &aside)?;
    for suffix in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if std::fs::symlink_metadata(&from).is_ok() {
            std::fs::rename(&from, format!("{}{suffix}", aside.display()))?;
        }
    }
    tracing::warn!(path = %path.display(), aside = %aside.display(), "the search index is not a usable database; set aside, rebuilding it");
    Ok(aside)
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
