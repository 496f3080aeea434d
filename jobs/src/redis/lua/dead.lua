-- dead.lua: operator actions on the dead set.
-- KEYS[1] queue key base
-- ARGV[1] action: "retry" | "discard", ARGV[2] job id
-- returns 1 if the job was in the dead set, else 0
local base = KEYS[1]
local action, id = ARGV[1], ARGV[2]
local env = redis.call("HGET", base .. "dead:data", id)
if not env then
  return 0
end
redis.call("ZREM", base .. "dead", id)
redis.call("HDEL", base .. "dead:data", id)
redis.call("HDEL", base .. "dead:error", id)
if action == "retry" then
  redis.call("RPUSH", base .. "ready", with_attempt(env, 0))
end
return 1
