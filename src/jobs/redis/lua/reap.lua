-- reap.lua: re-deliver jobs whose lease expired (their worker died), or bury them when the
-- lost delivery was their last attempt. The lost delivery stays counted as an attempt.
-- KEYS[1] queue key base
-- ARGV[1] now (ms), ARGV[2] max leases to reap
-- returns { redelivered, buried }
local base = KEYS[1]
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local expired = redis.call("ZRANGEBYSCORE", base .. "running", "-inf", "(" .. now, "LIMIT", 0, limit)
local redelivered, buried = 0, 0
for _, member in ipairs(expired) do
  redis.call("ZREM", base .. "running", member)
  local id, attempt = string.match(member, "^(.*)|(%d+)$")
  local env = redis.call("HGET", base .. "inflight", id)
  if env then
    local _, a, max, mode, key = parse(env)
    if a == tonumber(attempt) then
      redis.call("HDEL", base .. "inflight", id)
      if a >= max then
        bury(base, now, env, id, "worker lost during attempt " .. a .. " of " .. max .. " (lease expired)")
        finish(base, now, env, id, mode, key)
        buried = buried + 1
      else
        redis.call("RPUSH", base .. "ready", env)
        redelivered = redelivered + 1
      end
    end
  end
end
if buried > 0 then
  redis.call("HINCRBY", base .. "stats", "failed", buried)
  redis.call("HINCRBY", base .. "stats", "dead", buried)
end
return { redelivered, buried }
