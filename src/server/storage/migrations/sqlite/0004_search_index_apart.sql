-- The search index moves to a database file of its own (see src/server/storage/sqlite_search.rs):
-- filling it in the store's file took the store's one write lock, so a batch arriving while an
-- index step ran (hundreds of lines tokenized) waited for it; with one client that wait was most
-- of a batch's latency. The index there is rebuilt from the stored lines (from rowid 0).
DROP TRIGGER line_search_filled;
DROP TABLE line_search;
DROP TABLE line_search_progress;
-- A blank line filled in later keeps its rowid, which the indexer may have passed: the trigger
-- queues it here, in the ingest's own transaction, and the indexer indexes it again.
CREATE TABLE line_search_redo (line INTEGER PRIMARY KEY);
CREATE TRIGGER line_search_filled AFTER UPDATE OF text ON lines WHEN new.text IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO line_search_redo (line) VALUES (new.rowid);
END;
-- Names this store, so that a search index left beside a different store is rebuilt rather than
-- trusted (its rowids would point at other lines).
CREATE TABLE store_identity (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    token BLOB NOT NULL
);
INSERT INTO store_identity (id, token) VALUES (0, randomblob(16));
