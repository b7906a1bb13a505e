CREATE TABLE sessions (
    id BLOB PRIMARY KEY,
    owner TEXT,
    agent TEXT,
    cwd TEXT,
    repository TEXT,
    contiguous INTEGER NOT NULL DEFAULT 0,
    lines INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    conflicts INTEGER NOT NULL DEFAULT 0,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    started TEXT,
    ended TEXT,
    notifications INTEGER NOT NULL DEFAULT 0,
    has_usage_checkpoints INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_by_last_seen ON sessions (last_seen);
CREATE TABLE lines (
    session BLOB NOT NULL,
    n INTEGER NOT NULL,
    blank INTEGER NOT NULL,
    id BLOB,
    text TEXT,
    UNIQUE (session, n)
);
CREATE TABLE conflicts (
    session BLOB NOT NULL,
    n INTEGER NOT NULL,
    id BLOB NOT NULL,
    text TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    UNIQUE (session, n, id)
);
CREATE TABLE shutdowns (
    session BLOB NOT NULL,
    n INTEGER NOT NULL,
    usage TEXT NOT NULL,
    PRIMARY KEY (session, n)
);
CREATE TABLE notifications (
    session BLOB NOT NULL,
    received_at INTEGER NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX notifications_by_session ON notifications (session);
CREATE TABLE tokens (
    name TEXT PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
