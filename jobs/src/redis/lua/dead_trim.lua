-- dead_trim.lua: drop dead jobs older than a cutoff or beyond a count, oldest first, bounded.
-- KEYS[1] queue key base
-- ARGV[1] cutoff (ms), ARGV[2] max jobs kept, ARGV[3] max removed per call
-- returns the number removed
local base = KEYS[1]
local cutoff, keep, budget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = redis.call("ZRANGEBYSCORE", base .. "dead", "-inf", "(" .. cutoff, "LIMIT", 0, budget)
local excess = redis.call("ZCARD", base .. "dead") - #ids - keep
if excess > 0 then
  local extra = redis.call("ZRANGE", base .. "dead", #ids, #ids + math.min(excess, budget - #ids) - 1)
  for _, id in ipairs(extra) do
    ids[#ids + 1] = id
  end
end
if #ids > 0 then
  variadic("ZREM", base .. "dead", ids)
  variadic("HDEL", base .. "dead:data", ids)
  variadic("HDEL", base .. "dead:error", ids)
end
return #ids
