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
-- A shared or permit hold: its own lease, if it has not ended.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ends = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not ends or tonumber(ends) <= now or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
local ttl = math.max(tonumber(last[2]) - now, 1)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
