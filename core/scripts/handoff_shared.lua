-- Hand-off of one shared or permit hold to a new token in one round trip:
-- the old holder's entry goes, the new one comes with a new fence and its
-- own lease, and the number of holders stays the same (no limit to check).
-- KEYS[1] lock key (a hash, see acquire_shared.lua), KEYS[2] fence counter,
-- KEYS[3] holder leases, KEYS[4] waiting writers' claims
-- ARGV[1] current token, ARGV[2] new token, ARGV[3] lease ms, ARGV[4] fence
-- counter ms
-- Returns {1, fence}; {0, 0} when ARGV[1] holds no live share here; {-1, 0} when
-- a writer's claim is live: the share must be released so that the writer
-- gets its turn (writer preference, see acquire_shared.lua).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- our own lease, still running (an ended one is not ours to pass on)
local ends = redis.pcall('ZSCORE', KEYS[3], ARGV[1])
if type(ends) ~= 'string' or tonumber(ends) <= now then
  return {0, 0}
end
local claim = redis.call('ZRANGE', KEYS[4], -1, -1, 'WITHSCORES')
if #claim > 0 and tonumber(claim[2]) > now then
  return {-1, 0}
end
local n = redis.call('INCR', KEYS[2])
if n == 1 then
  n = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('SET', KEYS[2], string.format('%.0f', n), 'PX', ARGV[4])
end
-- the keys outlive the new lease as acquire_shared.lua keeps them (field '^')
local lease = tonumber(ARGV[3])
-- and '<' stays at or below every live lease's end
local f = redis.call('HMGET', KEYS[1], '^', '<')
local until_ms = tonumber(f[1] or '0')
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[2], string.format('%.0f', n))
redis.call('ZADD', KEYS[3], now + lease, ARGV[2])
if tonumber(f[2] or '0') > now + lease then
  redis.call('HSET', KEYS[1], '<', now + lease)
end
if until_ms < now + lease then
  redis.call('HSET', KEYS[1], '^', now + 2 * lease)
  redis.call('PEXPIRE', KEYS[1], 2 * lease)
  redis.call('PEXPIRE', KEYS[3], 2 * lease)
end
return {1, n}
