-- Raise (Redlock): lift a node's fence counter to at least a fence issued by
-- the quorum, so that every later majority sees it. Never lowers it.
-- KEYS[1] fence counter; ARGV[1] fence (decimal), ARGV[2] counter ms
-- Returns 1 when the counter was raised, 0 when it was already there.
local cur = redis.call('GET', KEYS[1])
if cur then
  -- Compare decimal strings exactly (no float rounding above 2^53).
  if #cur > #ARGV[1] or (#cur == #ARGV[1] and cur >= ARGV[1]) then
    return 0
  end
  redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
  return 1
end
-- A node that lost the counter (restarted empty) gets it back with the
-- lifetime a new counter has.
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
