-- Renew on one Redlock node: extend where the token holds the key, re-create
-- it where the key is missing (a node that restarted empty), so that the
-- renewing quorum does not erode while the holder believes it is safe. A
-- re-created key lifts the node's fence counter to the hold's fence, so
-- later grants through that node stay above it. Never takes a key that
-- another token holds. (The single-node refresh.lua never re-creates.)
-- KEYS[1] lock key, KEYS[2] fence counter (same hash tag)
-- ARGV[1] owner token, ARGV[2] lease ms, ARGV[3] fence (decimal),
-- ARGV[4] fence counter ms
-- Returns 1 when extended, 2 when re-created, 0 when another token holds it.
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if cur then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local f = redis.call('GET', KEYS[2])
if not f then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
elseif #f < #ARGV[3] or (#f == #ARGV[3] and f < ARGV[3]) then
  -- Compare decimal strings exactly (no float rounding above 2^53).
  redis.call('SET', KEYS[2], ARGV[3], 'KEEPTTL')
end
return 2
