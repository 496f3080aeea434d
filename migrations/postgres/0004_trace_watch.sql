-- Someone tails the log (`GET …/trace/stream`) until this time (ms): the database live chunk
-- store's appends then tell the runner to PATCH every 3 s instead of every 60 s (GitLab's
-- `X-GitLab-Trace-Update-Interval`). Mirrored in migrations/sqlite/0005_trace_watch.sql.
ALTER TABLE builds ADD COLUMN trace_watched_until BIGINT;
