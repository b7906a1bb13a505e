-- Transcript lines are a few KB each: TOAST's pglz compression of every line cost more CPU than
-- the disk it saved. Store them out of line, uncompressed (applies to rows written from now on).
ALTER TABLE lines ALTER COLUMN text SET STORAGE EXTERNAL;
ALTER TABLE conflicts ALTER COLUMN text SET STORAGE EXTERNAL;
