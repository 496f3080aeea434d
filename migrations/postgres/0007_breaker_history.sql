-- Circuit breaker history: one row per change of a breaker's shared state (opened with its
-- reason, closed), so the dashboard can show when the object store was down and why. A change
-- is keyed by (name, state, at): every process that sees the same outage writes the same row,
-- kept once. `set_breaker` keeps the newest 100 per breaker.
CREATE TABLE circuit_breaker_events (
    id     BIGSERIAL PRIMARY KEY,
    name   TEXT NOT NULL,
    state  TEXT NOT NULL CHECK (state IN ('closed', 'open')),
    reason TEXT,
    at     BIGINT NOT NULL,
    UNIQUE (name, at, state)
);
CREATE INDEX circuit_breaker_events_newest ON circuit_breaker_events (name, id);
