-- enqueue.lua: store jobs (bulk), applying dedup.
-- KEYS[1] queue key base
-- ARGV[1] now (ms); then per job: envelope, run_at (ms, 0 = now), dedup ttl (ms, >= 1)
-- returns one outcome per job: 1 enqueued, 0 duplicate, 2 rescheduled once
local base = KEYS[1]
local now = tonumber(ARGV[1])
local out, ready = {}, {}
for i = 2, #ARGV, 3 do
  out[#out + 1] = enqueue_one(base, now, ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ready)
end
variadic("RPUSH", base .. "ready", ready)
return out
