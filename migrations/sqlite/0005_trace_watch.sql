-- As migrations/postgres/0004_trace_watch.sql: a log is tailed until this time (ms).
ALTER TABLE builds ADD COLUMN trace_watched_until INTEGER;
