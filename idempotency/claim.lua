-- claim: a lock holder starts an attempt for an idempotency key.
-- KEYS[1]  the record hash (fields: fence, rec), in the lock key's slot
-- ARGV[1]  the holder's fence (decimal, no leading zeros)
-- ARGV[2]  retention in milliseconds, for a fresh claim
-- Returns {1, rec} when an answer is stored (replay it), {2, fence} when a
-- higher fence claimed the key (this holder is stale), {0} when the claim
-- was recorded.
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local rec = redis.call('HGET', KEYS[1], 'rec')
if rec then
  return {1, rec}
end
local cur = redis.call('HGET', KEYS[1], 'fence')
if cur and gt(cur, ARGV[1]) then
  return {2, cur}
end
redis.call('HSET', KEYS[1], 'fence', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {0}
