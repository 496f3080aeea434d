-- append_trace.lua: append bytes to a build's live trace, atomically, at an exact offset.
-- KEYS[1] the build's key base "<prefix>:trace:{<build>}:" (one hash tag, one cluster slot)
-- ARGV[1] offset, ARGV[2] chunk size, ARGV[3] TTL (ms), ARGV[4] the bytes, ARGV[5] now (ms,
-- the application's clock), ARGV[6] how stale "at" may get (ms)
-- returns { 1, new length, {started chunk indexes}, {filled chunk indexes}, watched (0/1) }
--         when appended,
--         { 0, current length, {unflushed chunk indexes} } when the offset is not the current
--         length (nothing written); unflushed: the full chunks of the refused range that are
--         still live (see below),
--         { -1, chunk index, its length } when a live chunk is not where the length says
--         { 2 } when the trace is closed (the job sent its final state)
-- Keys: "len" the trace length; "chunk:<i>" chunk i's bytes; "closed" set once appends end;
-- "watched" set (with a short TTL) while someone tails the log; "at" the time of the last
-- append (or keep-alive touch) to within ARGV[6], which the stuck-build sweep reads: rewritten
-- only once it is that old (a GET per append instead of a SET). Each write renews the TTL, like
-- GitLab's one-week chunk TTL: a log nobody flushes or archives for that long is abandoned.
local base = KEYS[1]
local offset, size, ttl, data = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if redis.call("EXISTS", base .. "closed") == 1 then
  return { 2 }
end
local length = tonumber(redis.call("GET", base .. "len") or "0")
if offset ~= length then
  -- A runner resends a PATCH whose reply it lost; if that append landed, the flushes of the
  -- chunks it filled may have been lost with the reply. Report the chunks the refused range
  -- covers that are full and still live (at most the request's size over the chunk size: 32
  -- for the API's 4 MiB body limit), so they are enqueued again; a flush that merely waits in
  -- the queue makes a duplicate. Only refused appends pay for this.
  local unflushed = {}
  if offset < length then
    local last = math.floor(math.min(offset + #data, length) / size) - 1
    for index = math.floor(offset / size), last do
      if redis.call("EXISTS", base .. "chunk:" .. index) == 1 then
        unflushed[#unflushed + 1] = index
      end
    end
  end
  return { 0, length, unflushed }
end
local started, filled = {}, {}
-- Check every chunk first, so a refused append writes nothing.
local at, pos = offset, 1
while pos <= #data do
  local index, within = math.floor(at / size), at % size
  local take = math.min(size - within, #data - pos + 1)
  if within > 0 then
    local have = redis.call("STRLEN", base .. "chunk:" .. index)
    if have ~= within then
      return { -1, index, have }
    end
  end
  at, pos = at + take, pos + take
end
at, pos = offset, 1
while pos <= #data do
  local index, within = math.floor(at / size), at % size
  local take = math.min(size - within, #data - pos + 1)
  local key = base .. "chunk:" .. index
  -- Redis hashes every byte of a new Lua string: pass the argument itself when it fits whole.
  local piece = data
  if take < #data then
    piece = string.sub(data, pos, pos + take - 1)
  end
  if within == 0 then
    started[#started + 1] = index
    redis.call("SET", key, piece, "PX", ttl)
  else
    redis.call("APPEND", key, piece)
    redis.call("PEXPIRE", key, ttl)
  end
  if within + take == size then
    filled[#filled + 1] = index
  end
  at, pos = at + take, pos + take
end
redis.call("SET", base .. "len", at, "PX", ttl)
local now = tonumber(ARGV[5])
if now - tonumber(redis.call("GET", base .. "at") or "0") >= tonumber(ARGV[6]) then
  redis.call("SET", base .. "at", now, "PX", ttl)
end
return { 1, at, started, filled, redis.call("EXISTS", base .. "watched") }
