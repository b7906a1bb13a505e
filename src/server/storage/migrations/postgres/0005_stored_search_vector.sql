-- Search read the GIN expression index of migration 3, but every heap row the index pointed at
-- (and, once the bitmap of a common word outgrew work_mem, every row on its pages) was checked
-- again by recomputing `to_tsvector(kcap_search_text(text))`: parsing the line's JSON in
-- PL/pgSQL, per match, before the sort and the limit. A common word over 1 GB took tens of
-- seconds. The vector is now computed once, when the line is stored (or its text filled in),
-- and kept in the row; adding the column rewrites the table, which fills it for lines already
-- stored. The planner also gets statistics on the column's lexemes, so it knows a common word
-- from a rare one.
DROP INDEX lines_search;
ALTER TABLE lines ADD COLUMN search TSVECTOR
    GENERATED ALWAYS AS (to_tsvector('simple', kcap_search_text(text))) STORED;
CREATE INDEX lines_search ON lines USING gin (search) WHERE NOT blank;
ANALYZE lines;
