-- Release: compare the owner token, delete, notify waiters. One round trip.
-- KEYS[1] lock key, KEYS[2] release channel, KEYS[3] fence counter
-- ARGV[1] owner token, ARGV[2] publish command (PUBLISH or SPUBLISH),
-- ARGV[3] (optional) the hold's fence
-- Returns 1 + the number of subscribers that received the notice; -1 when
-- the key is gone but the fence counter still stands at our fence (no one
-- acquired after us: a re-sent release whose first send landed); 0 when
-- the token does not hold the lock.
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1 + redis.call(ARGV[2], KEYS[2], '1')
end
if not v and ARGV[3] and redis.call('GET', KEYS[3]) == ARGV[3] then
  return -1
end
return 0
