-- Computing each line's search vector inside the INSERT (migration 5's generated column) was most
-- of the database's work per batch: a PL/pgSQL JSON parse and to_tsvector of every line, plus its
-- GIN entries, all before the commit that acknowledges the batch. The vector is now an ordinary
-- column filled off the ingest path by each replica's search indexer (a few hundred lines per
-- step, rows taken with SKIP LOCKED so replicas share the work), as SQLite's FTS index already
-- is. Vectors already computed are kept (DROP EXPRESSION does not rewrite the table; PostgreSQL
-- 13 or later). The partial index lists exactly the lines still waiting.
ALTER TABLE lines ALTER COLUMN search DROP EXPRESSION;
CREATE INDEX lines_unindexed ON lines (session) WHERE search IS NULL AND NOT blank;
-- A line whose text changes (a blank marker filled in) waits for the indexer again, whoever
-- wrote the change.
CREATE FUNCTION kcap_search_stale() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.search := NULL;
    RETURN NEW;
END
$$;
CREATE TRIGGER lines_search_stale BEFORE UPDATE OF text ON lines
    FOR EACH ROW WHEN (NEW.text IS DISTINCT FROM OLD.text) EXECUTE FUNCTION kcap_search_stale();
