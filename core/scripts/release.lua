-- Release: compare the owner token, delete, notify waiters. One round trip.
-- KEYS[1] lock key, KEYS[2] release channel, KEYS[3] fence counter;
-- KEYS[4] holder leases, KEYS[5] writers' claims (optional: shared and
-- permit holds, see acquire_shared.lua)
-- ARGV[1] owner token, ARGV[2] publish command (PUBLISH or SPUBLISH),
-- ARGV[3] (optional, '' for none) the hold's fence,
-- ARGV[4] (optional) '1' to withdraw this token's writer claim
-- Returns 1 + the number of subscribers that received the notice; -1 when
-- the key is gone but the fence counter still stands at our fence (no one
-- acquired after us: a re-sent release whose first send landed); 0 when
-- the token does not hold the lock.
if ARGV[4] == '1' and KEYS[5] and redis.call('ZREM', KEYS[5], ARGV[1]) == 1 then
  -- readers held back by the claim may go now
  redis.call(ARGV[2], KEYS[2], '1')
end
local v = redis.pcall('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1 + redis.call(ARGV[2], KEYS[2], '1')
end
if type(v) == 'table' and KEYS[4] and redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  -- one shared or permit hold ends; the keys live on with the others
  redis.call('ZREM', KEYS[4], ARGV[1])
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local dead = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
  if #dead > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
    redis.call('HDEL', KEYS[1], unpack(dead))
  end
  local last = redis.call('ZRANGE', KEYS[4], -1, -1, 'WITHSCORES')
  if #last == 0 then
    redis.call('DEL', KEYS[1], KEYS[4])
  else
    local ttl = math.max(tonumber(last[2]) - now, 1)
    redis.call('PEXPIRE', KEYS[1], ttl)
    redis.call('PEXPIRE', KEYS[4], ttl)
  end
  return 1 + redis.call(ARGV[2], KEYS[2], '1')
end
if (not v or type(v) == 'table') and ARGV[3] and ARGV[3] ~= '' and redis.call('GET', KEYS[3]) == ARGV[3] then
  return -1
end
return 0
