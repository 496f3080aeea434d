-- cron_fire.lua: enqueue a cron tick's job at most once across all schedulers.
-- KEYS[1] queue key base
-- ARGV[1] schedule name, ARGV[2] tick (ms), ARGV[3] now (ms), ARGV[4] envelope,
-- ARGV[5] run_at (ms), ARGV[6] dedup ttl (ms)
-- returns 1 if this call fired the tick, 0 if it (or a later tick) was already fired
local base = KEYS[1]
local k = base .. "cron:" .. ARGV[1]
local tick = tonumber(ARGV[2])
local last = tonumber(redis.call("GET", k) or "-1")
if tick <= last then
  return 0
end
redis.call("SET", k, ARGV[2])
local batch = {}
enqueue_one(base, tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), batch)
variadic("RPUSH", base .. "ready", batch)
return 1
