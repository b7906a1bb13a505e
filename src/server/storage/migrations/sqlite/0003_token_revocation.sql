-- A revoked token stays in the table (so its name is not reused and auth stays on) but no
-- longer authenticates.
ALTER TABLE tokens ADD COLUMN revoked_at INTEGER;
