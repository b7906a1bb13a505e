-- Search matched through migration 3's GIN index on the expression
-- `to_tsvector('simple', kcap_search_text(text))`. PostgreSQL keeps no lexeme statistics for
-- that expression, so it guessed 0.5 % of lines for every word, and for a common word (1.14 M
-- of 1.41 M lines at 1 GB) could pick a bitmap scan of every match whose bitmap outgrew
-- work_mem: each row on a lossy page was checked again by recomputing the expression, a
-- PL/pgSQL JSON parse per line, before the sort and the limit (68 s in EXPLAIN ANALYZE).
-- The vector is now computed once, when the line is stored (or its text filled in), and kept in
-- the row under a GIN index: a recheck reads it, and ANALYZE gives the planner its lexemes, so
-- a common word walks the newest sessions and stops at the page while a rare one reads the
-- index. Adding the column rewrites the table, which fills it for lines already stored.
-- kcap_search_text catches errors, which needs subtransactions: it was marked PARALLEL SAFE, so a
-- parallel plan calling it failed ("cannot start subtransactions during a parallel operation").
-- Queries no longer call it, but say what it is.
ALTER FUNCTION kcap_search_text(BYTEA) PARALLEL UNSAFE;
DROP INDEX lines_search;
ALTER TABLE lines ADD COLUMN search TSVECTOR
    GENERATED ALWAYS AS (to_tsvector('simple', kcap_search_text(text))) STORED;
CREATE INDEX lines_search ON lines USING gin (search) WHERE NOT blank;
ANALYZE lines;
