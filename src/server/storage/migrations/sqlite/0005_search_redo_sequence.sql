-- Lines filled in after the indexer passed them were dequeued (deleted here, with a full fsync)
-- right after the index recorded them without one (the index is written with synchronous =
-- NORMAL): an index that lost its last commit, or an older index file, never indexed them. The
-- queue now gets a growing sequence; the index records the last one it applied in its own
-- progress row, in the same transaction, and the indexer deletes rows only at or below a
-- sequence the index holds durably. `line_search_redo_pruned` remembers how far that went, so
-- an index file recording less (it missed deleted rows) is rebuilt.
DROP TRIGGER line_search_filled;
CREATE TABLE line_search_redo_seq (seq INTEGER PRIMARY KEY AUTOINCREMENT, line INTEGER NOT NULL);
INSERT INTO line_search_redo_seq (line) SELECT line FROM line_search_redo ORDER BY line;
DROP TABLE line_search_redo;
ALTER TABLE line_search_redo_seq RENAME TO line_search_redo;
CREATE TRIGGER line_search_filled AFTER UPDATE OF text ON lines WHEN new.text IS NOT NULL
BEGIN
    INSERT INTO line_search_redo (line) VALUES (new.rowid);
END;
CREATE TABLE line_search_redo_pruned (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    seq INTEGER NOT NULL
);
INSERT INTO line_search_redo_pruned (id, seq) VALUES (0, 0);
