-- reap.lua: re-deliver jobs whose lease expired (their worker died), or bury them when the
-- lost run was their last attempt. The lost run counts as an attempt, so a job that kills its
-- worker every time ends in the dead set instead of looping forever.
-- KEYS[1] queue key base
-- ARGV[1] now (ms), ARGV[2] max leases to reap
-- returns { redelivered, buried }
local base = KEYS[1]
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local expired = redis.call("ZRANGEBYSCORE", base .. "running", "-inf", "(" .. now, "LIMIT", 0, limit)
local redelivered, buried = 0, 0
for _, env in ipairs(expired) do
  redis.call("ZREM", base .. "running", env)
  deactivate(base, env)
  local _, _, attempt, max = parse(env)
  local spent = with_attempt(env, attempt + 1)
  if attempt + 1 >= max then
    bury(base, now, spent, "worker lost during attempt " .. (attempt + 1) .. " of " .. max .. " (lease expired)")
    finish(base, now, spent)
    buried = buried + 1
  else
    redis.call("RPUSH", base .. "ready", spent)
    redelivered = redelivered + 1
  end
end
if buried > 0 then
  redis.call("HINCRBY", base .. "stats", "failed", buried)
  redis.call("HINCRBY", base .. "stats", "dead", buried)
end
return { redelivered, buried }
