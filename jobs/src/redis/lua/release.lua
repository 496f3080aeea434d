-- release.lua: make up to N scheduled jobs due now (retries waiting out a backoff, snoozed
-- jobs, jobs enqueued for later): their run_at moves to now, earliest first.
-- KEYS[1] queue key base
-- ARGV[1] now (ms), ARGV[2] max jobs
-- returns how many jobs were released
local key = KEYS[1] .. "scheduled"
local now, max = tonumber(ARGV[1]), tonumber(ARGV[2])
local later = redis.call("ZRANGEBYSCORE", key, "(" .. now, "+inf", "LIMIT", 0, max)
for i = 1, #later do
  redis.call("ZADD", key, "XX", now, later[i])
end
return #later
