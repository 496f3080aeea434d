-- fetch.lua: lease up to N due jobs of a queue within its global concurrency limit.
-- KEYS[1] queue key base
-- ARGV[1] now (ms), ARGV[2] max jobs, ARGV[3] lease (ms), ARGV[4] max scheduled jobs to promote
-- returns { lease deadline, leased envelope... } with each attempt already incremented
-- Cost: O(promoted + leased); nothing scans the backlog.
local base = KEYS[1]
local now, max, lease, promote = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

local due = redis.call("ZRANGEBYSCORE", base .. "scheduled", "-inf", now, "LIMIT", 0, promote)
if #due > 0 then
  variadic("RPUSH", base .. "ready", due)
  variadic("ZREM", base .. "scheduled", due)
end

local limit = redis.call("GET", base .. "limit")
if limit then
  local free = tonumber(limit) - redis.call("ZCARD", base .. "running")
  if free < max then
    max = free
  end
end
local deadline = now + lease
if max <= 0 then
  return { deadline }
end
local envs = redis.call("LPOP", base .. "ready", max)
if not envs then
  return { deadline }
end

local out, zargs, hargs = { deadline }, {}, {}
for _, env in ipairs(envs) do
  local id, attempt, _, mode, key = parse(env)
  local leased = with_attempt(env, attempt + 1)
  zargs[#zargs + 1] = deadline
  zargs[#zargs + 1] = id .. "|" .. (attempt + 1)
  hargs[#hargs + 1] = id
  hargs[#hargs + 1] = leased
  if mode == "e" then
    release_key(base, key, id)
  end
  out[#out + 1] = leased
end
variadic("ZADD", base .. "running", zargs)
variadic("HSET", base .. "inflight", hargs)
return out
