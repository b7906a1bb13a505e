-- The web UI's reads: sessions listed by start, and full-text search over the readable fields of
-- each line (prompts, answers, reasoning, tool arguments and results, messages), not JSON keys
-- or base64 blobs. The index is filled off the ingest path by the web indexer
-- (src/server/web/sqlite.rs), which records how far it got; a blank line filled in later by an
-- UPDATE is rare and indexed at once by the trigger below.
CREATE INDEX sessions_by_first_seen ON sessions (first_seen);
CREATE VIRTUAL TABLE line_search USING fts5(
    body,
    content = '',
    contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TABLE line_search_progress (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    last_rowid INTEGER NOT NULL
);
INSERT INTO line_search_progress (id, last_rowid) VALUES (0, 0);
CREATE TRIGGER line_search_filled AFTER UPDATE OF text ON lines
WHEN new.text IS NOT NULL AND new.rowid <= (SELECT last_rowid FROM line_search_progress WHERE id = 0)
BEGIN
    DELETE FROM line_search WHERE rowid = new.rowid;
    INSERT INTO line_search (rowid, body) VALUES (new.rowid, substr(
        CASE WHEN json_valid(new.text) THEN concat_ws(char(10),
            json_extract(new.text, '$.data.content'), json_extract(new.text, '$.data.reasoningText'),
            json_extract(new.text, '$.data.message'), json_extract(new.text, '$.data.summary'),
            json_extract(new.text, '$.data.toolName'), json_extract(new.text, '$.data.agentName'),
            json_extract(new.text, '$.data.arguments'), json_extract(new.text, '$.data.result'),
            json_extract(new.text, '$.data.error'))
        ELSE new.text END, 1, 262144));
END;
