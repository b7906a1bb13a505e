CREATE TABLE sessions (
    id BYTEA PRIMARY KEY,
    owner TEXT,
    agent TEXT,
    cwd TEXT,
    repository TEXT,
    contiguous BIGINT NOT NULL DEFAULT 0,
    lines BIGINT NOT NULL DEFAULT 0,
    duplicates BIGINT NOT NULL DEFAULT 0,
    conflicts BIGINT NOT NULL DEFAULT 0,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    started TEXT,
    ended TEXT,
    notifications BIGINT NOT NULL DEFAULT 0,
    has_usage_checkpoints BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX sessions_by_last_seen ON sessions (last_seen);
CREATE TABLE lines (
    session BYTEA NOT NULL,
    n BIGINT NOT NULL,
    blank BOOLEAN NOT NULL,
    id BYTEA,
    text BYTEA,
    UNIQUE (session, n)
);
CREATE TABLE conflicts (
    session BYTEA NOT NULL,
    n BIGINT NOT NULL,
    id BYTEA NOT NULL,
    text BYTEA NOT NULL,
    received_at BIGINT NOT NULL,
    UNIQUE (session, n, id)
);
CREATE TABLE shutdowns (
    session BYTEA NOT NULL,
    n BIGINT NOT NULL,
    usage TEXT NOT NULL,
    PRIMARY KEY (session, n)
);
CREATE TABLE notifications (
    seq BIGSERIAL PRIMARY KEY,
    session BYTEA NOT NULL,
    received_at BIGINT NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX notifications_by_session ON notifications (session);
CREATE TABLE tokens (
    name TEXT PRIMARY KEY,
    hash BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
