-- Release: compare the owner token, delete, notify waiters. One round trip.
-- KEYS[1] lock key, KEYS[2] release channel
-- ARGV[1] owner token, ARGV[2] publish command (PUBLISH or SPUBLISH)
-- Returns 1 + the number of subscribers that received the notice, or 0
-- when the token does not hold the lock.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1 + redis.call(ARGV[2], KEYS[2], '1')
end
return 0
