-- ack_fetch.lua: settle deliveries, then lease new ones, in one round trip (the worker's
-- steady state: the jobs that just finished free the slots the next ones take).
-- KEYS[1] queue key base
-- ARGV[1] now (ms), ARGV[2] max jobs, ARGV[3] lease (ms), ARGV[4] max scheduled jobs to
-- promote, ARGV[5] jobs to lease ahead when the queue has no limit; then four values per
-- delivery to settle (see ack_all() in lib.lua)
-- returns the leased envelopes as stored
local base, now = KEYS[1], tonumber(ARGV[1])
ack_all(base, now, ARGV, 6)
return fetch(base, now, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
