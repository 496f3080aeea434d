-- ack.lua: settle deliveries (batched; see ack_all() in lib.lua).
-- KEYS[1] queue key base
-- ARGV[1] now (ms); then four values per delivery: op, leased envelope, a, b
-- returns the number of deliveries settled
return ack_all(KEYS[1], tonumber(ARGV[1]), ARGV, 2)
