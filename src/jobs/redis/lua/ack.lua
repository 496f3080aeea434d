-- ack.lua: settle deliveries (batched).
-- KEYS[1] queue key base
-- ARGV[1] now (ms); then per delivery: op, id, attempt, arg
--   op C complete | R retry (arg = run_at) | S snooze (arg = run_at) | D dead (arg = error)
--      L release (hand back on shutdown)
--   R carries its error after the run_at as "run_at|error"
-- A delivery whose lease was reaped (and maybe re-delivered) is skipped: the member
-- "id|attempt" is no longer in the running set.
-- returns the number of deliveries settled
local base = KEYS[1]
local now = tonumber(ARGV[1])
local settled, done, failed, dead = 0, 0, 0, 0
local ready_front = {}
for i = 2, #ARGV, 4 do
  local op, id, attempt, arg = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  if redis.call("ZREM", base .. "running", id .. "|" .. attempt) == 1 then
    local env = redis.call("HGET", base .. "inflight", id)
    redis.call("HDEL", base .. "inflight", id)
    if env then
      settled = settled + 1
      local _, _, _, mode, key = parse(env)
      if op == "C" then
        done = done + 1
        finish(base, now, env, id, mode, key)
      elseif op == "R" then
        failed = failed + 1
        redis.call("ZADD", base .. "scheduled", tonumber(string.match(arg, "^(%d+)")), env)
      elseif op == "S" then
        redis.call("ZADD", base .. "scheduled", tonumber(arg), with_attempt(env, attempt - 1))
      elseif op == "L" then
        ready_front[#ready_front + 1] = with_attempt(env, attempt - 1)
      elseif op == "D" then
        failed = failed + 1
        dead = dead + 1
        bury(base, now, env, id, arg)
        finish(base, now, env, id, mode, key)
      end
    end
  end
end
variadic("LPUSH", base .. "ready", ready_front)
if done > 0 then redis.call("HINCRBY", base .. "stats", "processed", done) end
if failed > 0 then redis.call("HINCRBY", base .. "stats", "failed", failed) end
if dead > 0 then redis.call("HINCRBY", base .. "stats", "dead", dead) end
return settled
