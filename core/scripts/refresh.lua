-- Refresh: compare the owner token and extend the lease. Never re-creates an
-- expired lock.
-- KEYS[1] lock key; KEYS[2] (optional) holder leases of shared and permit
-- holds (see acquire_shared.lua)
-- ARGV[1] owner token, ARGV[2] lease ms
local v = redis.pcall('GET', KEYS[1])
if v == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if type(v) ~= 'table' or not KEYS[2] then
  return 0
end
-- A shared or permit hold: its own lease, if it has not ended. The keys
-- are kept alive past it as acquire_shared.lua does (field '^').
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
local ends = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not ends or tonumber(ends) <= now then
  return 0
end
local f = redis.call('HMGET', KEYS[1], ARGV[1], '^')
if not f[1] then
  return 0
end
redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
if tonumber(f[2] or '0') < now + lease then
  redis.call('HSET', KEYS[1], '^', now + 2 * lease)
  redis.call('PEXPIRE', KEYS[1], 2 * lease)
  redis.call('PEXPIRE', KEYS[2], 2 * lease)
end
return 1
