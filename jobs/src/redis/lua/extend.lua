-- extend.lua: renew the leases of running deliveries (heartbeat).
-- KEYS[1] queue key base
-- ARGV[1] new deadline (ms), ARGV[2] lease (ms); then the leased envelopes
-- A lease that was already reaped stays gone (ZADD XX). A reschedule_once job's `active:<id>`
-- key gets its TTL renewed with the lease (ACTIVE_LEASES leases, see lib.lua), so a long job
-- keeps it; PEXPIRE leaves a deleted key deleted.
-- returns nothing
local base = KEYS[1]
local ttl = ACTIVE_LEASES * tonumber(ARGV[2])
local args = {}
for i = 3, #ARGV do
  args[#args + 1] = ARGV[1]
  args[#args + 1] = ARGV[i]
  if string.byte(ARGV[i], 1) == MODE_RESCHEDULE then
    local _, id = parse(ARGV[i])
    redis.call("PEXPIRE", base .. "active:" .. id, ttl)
  end
end
for i = 1, #args, CHUNK do
  redis.call("ZADD", base .. "running", "XX", unpack(args, i, math.min(i + CHUNK - 1, #args)))
end
return 0
