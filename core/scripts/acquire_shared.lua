-- Acquire a shared or permit hold: one round trip.
-- KEYS[1] lock key: a hash of holder token -> fence, plus field '=' with
-- the mode tag ('s' shared, 'p<n>' n permits); an exclusive holder keeps
-- a plain string there instead.
-- KEYS[2] fence counter, KEYS[3] holder leases (zset token -> lease end,
-- server ms), KEYS[4] waiting writers' claims (zset token -> claim end).
-- ARGV[1] owner token, ARGV[2] lease ms, ARGV[3] fence counter ms,
-- ARGV[4] mode tag, ARGV[5] permit count (0: shared, no limit)
-- Returns {1, fence, free} when granted (free: permits left after this
-- one, -1 without a limit); {0, retry ms, 0} when refused; {-2, tag} when
-- the key's holders use another mode tag.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
local limit = tonumber(ARGV[5])

local function free(held)
  if limit > 0 then
    return limit - held
  end
  return -1
end

local typ = redis.call('TYPE', KEYS[1])['ok']

-- extend makes both keys live as long as their longest lease: ours, unless
-- one they already live for is longer (GT; a key just created has no TTL,
-- which GT would take for an infinite one).
local function extend()
  if typ == 'none' then
    redis.call('PEXPIRE', KEYS[1], lease)
    redis.call('PEXPIRE', KEYS[3], lease)
  else
    redis.call('PEXPIRE', KEYS[1], lease, 'GT')
    redis.call('PEXPIRE', KEYS[3], lease, 'GT')
  end
end
if typ == 'string' then
  return {0, redis.call('PTTL', KEYS[1]), 0}
end
if typ == 'hash' then
  local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
  if #dead > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
    redis.call('HDEL', KEYS[1], unpack(dead))
  end
  local mine = redis.call('HGET', KEYS[1], ARGV[1])
  if mine then
    -- our own earlier send of this attempt landed: success, full lease
    redis.call('ZADD', KEYS[3], now + lease, ARGV[1])
    extend()
    return {1, tonumber(mine), free(redis.call('ZCARD', KEYS[3]))}
  end
  if redis.call('ZCARD', KEYS[3]) == 0 then
    redis.call('DEL', KEYS[1], KEYS[3])
    typ = 'none'
  else
    local tag = redis.call('HGET', KEYS[1], '=')
    if tag ~= ARGV[4] then
      return {-2, tag or ''}
    end
  end
end

-- Writer preference: a waiting exclusive acquirer's live claim makes new
-- shared and permit requests wait behind it.
local claim = redis.call('ZRANGE', KEYS[4], -1, -1, 'WITHSCORES')
if #claim > 0 then
  local left = tonumber(claim[2]) - now
  if left > 0 then
    return {0, left, 0}
  end
  redis.call('DEL', KEYS[4]) -- the latest claim ended, so all did
end

local held = 0
if typ ~= 'none' then
  held = redis.call('ZCARD', KEYS[3])
end
if limit > 0 and held >= limit then
  local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  return {0, math.max(tonumber(first[2]) - now, 1), 0}
end

local n = redis.call('INCR', KEYS[2])
if n == 1 then
  n = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('SET', KEYS[2], string.format('%.0f', n), 'PX', ARGV[3])
end
redis.call('HSET', KEYS[1], '=', ARGV[4], ARGV[1], string.format('%.0f', n))
redis.call('ZADD', KEYS[3], now + lease, ARGV[1])
extend()
return {1, n, free(held + 1)}
