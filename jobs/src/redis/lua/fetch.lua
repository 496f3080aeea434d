-- fetch.lua: lease up to N due jobs of a queue (see fetch() in lib.lua).
-- KEYS[1] queue key base
-- ARGV[1] now (ms), ARGV[2] max jobs, ARGV[3] lease (ms), ARGV[4] max scheduled jobs to promote,
-- ARGV[5] jobs to lease ahead (0 here)
-- returns the leased envelopes as stored (attempt = runs before this one)
return fetch(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5]))
