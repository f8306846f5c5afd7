-- put: store an attempt's answer, fenced.
-- KEYS[1]  the record hash (fields: fence, rec), in the lock key's slot
-- ARGV[1]  the attempt's fence (decimal, no leading zeros)
-- ARGV[2]  the encoded record
-- ARGV[3]  retention in milliseconds
-- Returns 1 when stored; 0 (nothing written) when the recorded fence is
-- higher than ours: a newer holder claimed or answered the key.
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local cur = redis.call('HGET', KEYS[1], 'fence')
if cur and gt(cur, ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'fence', ARGV[1], 'rec', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
