-- lib.lua: helpers shared by the queue scripts; the Rust loader prepends it to each of them.
-- Every script gets KEYS[1] = the queue's key base "<prefix>:{<queue>}:"; all keys of a queue
-- share the "{<queue>}" hash tag, so one script only touches one Redis Cluster slot.
-- Envelope header (see envelope.rs): dedup_mode|id|attempt|max_attempts|dedup_key|rest...
-- A stored envelope's attempt counts the runs started before; a running job's record in the
-- `running` ZSET is the envelope exactly as it was fetched, so an ack is one ZREM of it.

-- Lua's unpack() fails past ~8000 values (the apalis-redis 1.0 bug); never unpack more than this.
local CHUNK = 500
-- First byte of the envelope: the dedup mode.
local MODE_NONE, MODE_EXECUTING, MODE_RESCHEDULE = string.byte("n"), string.byte("e"), string.byte("r")

local function parse(env)
  local mode, id, attempt, max, key = string.match(env, "^(%a)|([^|]*)|(%d+)|(%d+)|([^|]*)|")
  return mode, id, tonumber(attempt), tonumber(max), key
end

local function with_attempt(env, attempt)
  local head, rest = string.match(env, "^(%a|[^|]*|)%d+|(.*)$")
  return head .. attempt .. "|" .. rest
end

local function variadic(cmd, key, args)
  for i = 1, #args, CHUNK do
    redis.call(cmd, key, unpack(args, i, math.min(i + CHUNK - 1, #args)))
  end
end

-- Deletes a dedup key only while it still belongs to job `id`.
local function release_key(base, key, id)
  if key ~= "" then
    local k = base .. "dedup:" .. key
    if redis.call("GET", k) == id then
      redis.call("DEL", k)
    end
  end
end

-- Stores one job, applying dedup. Returns 1 enqueued, 0 duplicate, 2 rescheduled once.
-- Ready jobs are appended to `ready_batch` so the caller can RPUSH them in one command.
local function enqueue_one(base, now, env, run_at, ttl, ready_batch)
  if string.byte(env, 1) ~= MODE_NONE then
    local mode, id, _, _, key = parse(env)
    if not id then
      return redis.error_reply("malformed envelope")
    end
    local k = base .. "dedup:" .. key
    if not redis.call("SET", k, id, "NX", "PX", ttl) then
      if mode == "r" then
        local holder = redis.call("GET", k)
        if holder and redis.call("EXISTS", base .. "active:" .. holder) == 1 then
          redis.call("SET", base .. "rerun:" .. holder, ttl .. "|" .. env, "NX", "PX", ttl)
          return 2
        end
      end
      return 0
    end
  end
  if run_at > now then
    redis.call("ZADD", base .. "scheduled", run_at, env)
  else
    ready_batch[#ready_batch + 1] = env
  end
  return 1
end

-- A reschedule_once job is "active" while it runs: `active:<id>` (what lets a duplicate ask
-- for one rerun). It is deleted whenever the job is settled in any way (complete, retry,
-- snooze, dead, release, reaped); its TTL, ACTIVE_LEASES leases from the last fetch or
-- heartbeat, is only the backstop for a queue nobody reaps any more.
-- Two leases: the key outlives the lease itself until the reaper takes the job back.
local ACTIVE_LEASES = 2

-- A reschedule_once job stops being "active" (running) when it is settled in any way.
local function deactivate(base, env)
  if string.byte(env, 1) == MODE_RESCHEDULE then
    local _, id = parse(env)
    redis.call("DEL", base .. "active:" .. id)
  end
end

-- Bookkeeping when a job finishes for good (completed or dead): release an until_executed key
-- and start the one rerun a reschedule_once duplicate asked for.
local function finish(base, now, env)
  local byte = string.byte(env, 1)
  if byte == MODE_NONE or byte == MODE_EXECUTING then
    return
  end
  local mode, id, _, _, key = parse(env)
  release_key(base, key, id)
  if mode == "r" then
    local rerun = redis.call("GET", base .. "rerun:" .. id)
    if rerun then
      redis.call("DEL", base .. "rerun:" .. id)
      local ttl, renv = string.match(rerun, "^(%d+)|(.*)$")
      local batch = {}
      enqueue_one(base, now, renv, 0, tonumber(ttl), batch)
      variadic("RPUSH", base .. "ready", batch)
    end
  end
end

local function bury(base, now, env, err)
  local _, id = parse(env)
  redis.call("HDEL", base .. "retry:error", id)
  redis.call("ZADD", base .. "dead", now, id)
  redis.call("HSET", base .. "dead:data", id, env)
  redis.call("HSET", base .. "dead:error", id, err)
end

-- Settles deliveries given as quads in args[first..]: op, leased envelope, a, b
--   C complete                     (a, b unused)
--   c complete a run after the first (a, b unused): also drops the last retry's error
--   R retry  a = envelope with this attempt counted, b = "run_at|error"
--   S snooze a = run_at            (attempt not counted)
--   D dead   a = envelope with this attempt counted, b = error
--   L release (shutdown hand-back; first in line, attempt not counted)
-- A delivery whose lease was reaped is no longer in `running` (a re-delivery is stored with
-- a higher attempt, so it is a different member): its ack is skipped.
-- Returns the number of deliveries settled.
local function ack_all(base, now, args, first)
  local settled, done, failed, dead = 0, 0, 0, 0
  local front, plain = {}, {}
  for i = first, #args, 4 do
    local op, env, a, b = args[i], args[i + 1], args[i + 2], args[i + 3]
    local byte = string.byte(env, 1)
    if op == "C" and (byte == MODE_NONE or byte == MODE_EXECUTING) then
      -- The common case needs no bookkeeping: all of them go in one ZREM below.
      plain[#plain + 1] = env
    elseif redis.call("ZREM", base .. "running", env) == 1 then
      settled = settled + 1
      deactivate(base, env)
      if op == "C" or op == "c" then
        done = done + 1
        finish(base, now, env)
        if op == "c" then
          local _, id = parse(env)
          redis.call("HDEL", base .. "retry:error", id)
        end
      else
        if op == "R" then
          failed = failed + 1
          local run_at, err = string.match(b, "^(%d+)|(.*)$")
          local _, id = parse(a)
          redis.call("ZADD", base .. "scheduled", tonumber(run_at), a)
          redis.call("HSET", base .. "retry:error", id, err)
        elseif op == "S" then
          redis.call("ZADD", base .. "scheduled", tonumber(a), env)
        elseif op == "L" then
          front[#front + 1] = env
        elseif op == "D" then
          failed = failed + 1
          dead = dead + 1
          bury(base, now, a, b)
          finish(base, now, a)
        end
      end
    end
  end
  for i = 1, #plain, CHUNK do
    local n = redis.call("ZREM", base .. "running", unpack(plain, i, math.min(i + CHUNK - 1, #plain)))
    settled = settled + n
    done = done + n
  end
  -- LPUSH reverses its arguments; push the last first so the batch keeps its order.
  for j = #front, 1, -1 do
    redis.call("LPUSH", base .. "ready", front[j])
  end
  if done > 0 then redis.call("HINCRBY", base .. "stats", "processed", done) end
  if failed > 0 then redis.call("HINCRBY", base .. "stats", "failed", failed) end
  if dead > 0 then redis.call("HINCRBY", base .. "stats", "dead", dead) end
  return settled
end

-- Leases up to `max` due jobs within the queue's global concurrency limit, after promoting at
-- most `promote` due scheduled jobs; without a limit, `ahead` more (jobs a worker starts as its
-- slots free; with a limit they would hold slots another worker could run). Returns the leased
-- envelopes as stored.
-- Cost: O(promoted + leased); nothing scans the backlog, and a job without dedup costs one
-- ZADD member and no parsing.
local function fetch(base, now, max, lease, promote, ahead)
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
  else
    max = max + ahead
  end
  if max <= 0 then
    return {}
  end
  local envs = redis.call("LPOP", base .. "ready", max)
  if not envs then
    return {}
  end
  -- A string: Redis 7.0 formats every number argument of redis.call with "%.17g", which cost
  -- about 1 µs per leased job; "%d" once per call is exact and cheap.
  local deadline = string.format("%d", now + lease)
  local zargs = {}
  for i, env in ipairs(envs) do
    zargs[2 * i - 1] = deadline
    zargs[2 * i] = env
    local byte = string.byte(env, 1)
    if byte == MODE_EXECUTING then
      local _, id, _, _, key = parse(env)
      release_key(base, key, id)
    elseif byte == MODE_RESCHEDULE then
      local _, id = parse(env)
      redis.call("SET", base .. "active:" .. id, "1", "PX", ACTIVE_LEASES * lease)
    end
  end
  variadic("ZADD", base .. "running", zargs)
  return envs
end

