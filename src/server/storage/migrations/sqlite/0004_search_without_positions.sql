-- Search matches every term as a prefix (AND) and makes its snippets in Rust: it never asks
-- FTS5 for a phrase, NEAR, highlight() or bm25, so the token positions FTS5 kept by default
-- (detail=full) were most of the index and of the indexer's work for nothing. The index is
-- made again with detail=none and the indexer starts over from the first line: search finds
-- older lines again as it catches up (about a minute per GB), newer ones as usual.
DROP TRIGGER line_search_filled;
DROP TABLE line_search;
CREATE VIRTUAL TABLE line_search USING fts5(
    body,
    content = '',
    contentless_delete = 1,
    detail = none,
    tokenize = 'unicode61 remove_diacritics 2'
);
UPDATE line_search_progress SET last_rowid = 0 WHERE id = 0;
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
