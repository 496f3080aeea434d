-- Circuit breaker history (see migrations/postgres/0007_breaker_history.sql).
CREATE TABLE circuit_breaker_events (
    id     INTEGER PRIMARY KEY,
    name   TEXT NOT NULL,
    state  TEXT NOT NULL CHECK (state IN ('closed', 'open')),
    reason TEXT,
    at     INTEGER NOT NULL,
    UNIQUE (name, at, state)
) STRICT;
CREATE INDEX circuit_breaker_events_newest ON circuit_breaker_events (name, id);
