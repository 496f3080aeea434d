-- extend.lua: renew the leases of running deliveries (heartbeat).
-- KEYS[1] queue key base
-- ARGV[1] new deadline (ms); then the leased envelopes
-- A lease that was already reaped stays gone (ZADD XX).
-- returns nothing
local base = KEYS[1]
local args = {}
for i = 2, #ARGV do
  args[#args + 1] = ARGV[1]
  args[#args + 1] = ARGV[i]
end
for i = 1, #args, CHUNK do
  redis.call("ZADD", base .. "running", "XX", unpack(args, i, math.min(i + CHUNK - 1, #args)))
end
return 0
