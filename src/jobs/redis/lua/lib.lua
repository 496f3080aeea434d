-- lib.lua: helpers shared by the queue scripts; the Rust loader prepends it to each of them.
-- Every script gets KEYS[1] = the queue's key base "<prefix>:{<queue>}:"; all keys of a queue
-- share the "{<queue>}" hash tag, so one script only touches one Redis Cluster slot.
-- Envelope header (see envelope.rs): id|attempt|max_attempts|dedup_mode|dedup_key|rest...

-- Lua's unpack() fails past ~8000 values (the apalis-redis 1.0 bug); never unpack more than this.
local CHUNK = 500

local function parse(env)
  local id, attempt, max, mode, key = string.match(env, "^([^|]*)|(%d+)|(%d+)|(%a)|([^|]*)|")
  return id, tonumber(attempt), tonumber(max), mode, key
end

local function with_attempt(env, attempt)
  local id, rest = string.match(env, "^([^|]*)|%d+|(.*)$")
  return id .. "|" .. attempt .. "|" .. rest
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
  local id, _, _, mode, key = parse(env)
  if not id then
    return redis.error_reply("malformed envelope")
  end
  if mode ~= "n" then
    local k = base .. "dedup:" .. key
    if not redis.call("SET", k, id, "NX", "PX", ttl) then
      if mode == "r" then
        local holder = redis.call("GET", k)
        if holder and redis.call("HEXISTS", base .. "inflight", holder) == 1 then
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

-- Bookkeeping when a job finishes for good (completed or dead): release an until_executed key
-- and start the one rerun a reschedule_once duplicate asked for.
local function finish(base, now, env, id, mode, key)
  if mode == "d" or mode == "r" then
    release_key(base, key, id)
  end
  if mode == "r" then
    local rerun = redis.call("GET", base .. "rerun:" .. id)
    if rerun then
      redis.call("DEL", base .. "rerun:" .. id)
      local ttl, renv = string.match(rerun, "^(%d+)|(.*)$")
      local batch = {}
      enqueue_one(base, now, renv, 0, tonumber(ttl), batch)
      if #batch > 0 then
        redis.call("RPUSH", base .. "ready", batch[1])
      end
    end
  end
end

local function bury(base, now, env, id, err)
  redis.call("ZADD", base .. "dead", now, id)
  redis.call("HSET", base .. "dead:data", id, env)
  redis.call("HSET", base .. "dead:error", id, err)
end

