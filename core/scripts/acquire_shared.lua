-- Acquire a shared or permit hold: one round trip.
-- KEYS[1] lock key: a hash of holder token -> fence, plus one-letter
-- fields: '=' the mode tag ('s' shared, 'p<n>' n permits), '^' when the
-- keys expire, '<' a time no live holder's lease ends before, '!' the end
-- of the latest waiting writer's claim (times in server ms); an exclusive
-- holder keeps a plain string there instead.
-- KEYS[2] fence counter, KEYS[3] holder leases (zset token -> lease end),
-- KEYS[4] waiting writers' claims (zset token -> claim end).
-- ARGV[1] owner token, ARGV[2] lease ms, ARGV[3] fence counter ms,
-- ARGV[4] mode tag, ARGV[5] permit count (0: shared, no limit)
-- Returns {1, fence, free} when granted (free: permits left after this
-- one, -1 without a limit); {0, retry ms, 0} when refused; {-2, tag} when
-- the key's holders use another mode tag.
-- The one-letter fields let the common acquire (a key with live holders,
-- none of whose leases ended, no writer waiting) skip the scans: it runs
-- TIME, HMGET, INCR, HSET and ZADD.
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

-- One read tells the three cases apart: an exclusive holder's string
-- (WRONGTYPE), no key, or the holders' hash with our own entry and the
-- one-letter fields.
local f = redis.pcall('HMGET', KEYS[1], ARGV[1], '=', '^', '<', '!')
if f.err then
  return {0, redis.call('PTTL', KEYS[1]), 0}
end
local fresh = not f[2]
local function num(i)
  return tonumber(f[i] or '0')
end

-- enter records our entry and lease. The keys outlive every lease: when
-- they would expire before ours ends, both get twice our lease, noted in
-- '^' (refresh.lua and handoff_shared.lua keep the same rule), so most
-- acquires need not extend them; holders that die leave them behind two
-- leases at most. '<' stays at or below every live lease's end.
local function enter(fence)
  local ends = now + lease
  local fields = {'=', ARGV[4], ARGV[1], fence}
  local ext = fresh or num(3) < ends
  if ext then
    fields[#fields + 1], fields[#fields + 2] = '^', now + 2 * lease
  end
  if fresh or num(4) > ends then
    fields[#fields + 1], fields[#fields + 2] = '<', ends
  end
  redis.call('HSET', KEYS[1], unpack(fields))
  redis.call('ZADD', KEYS[3], ends, ARGV[1])
  if ext then
    redis.call('PEXPIRE', KEYS[1], 2 * lease)
    redis.call('PEXPIRE', KEYS[3], 2 * lease)
  end
end

-- scan drops the holders whose own lease ended (ours too, if it did) and
-- notes in '<' when the next one ends; it returns how many are left.
local function scan()
  local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
  if #dead > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
    redis.call('HDEL', KEYS[1], unpack(dead))
    for _, tok in ipairs(dead) do
      if tok == ARGV[1] then
        f[1] = false
      end
    end
  end
  local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  if #first == 0 then
    return 0
  end
  redis.call('HSET', KEYS[1], '<', first[2])
  f[4] = first[2]
  return redis.call('ZCARD', KEYS[3])
end

local held = 0
if not fresh then
  held = 1 -- at least: the hash lives, so someone holds (counted if needed)
  if now >= num(4) then
    held = scan() -- a lease may have ended
  elseif limit > 0 or f[2] ~= ARGV[4] then
    held = redis.call('ZCARD', KEYS[3])
  end
  if f[1] then
    -- our own earlier send of this attempt landed: success, full lease
    enter(f[1])
    return {1, tonumber(f[1]), free(held)}
  end
  if held == 0 then
    -- nobody left (rare: the keys outlive the longest lease by little)
    redis.call('DEL', KEYS[1], KEYS[3])
    fresh = true
  elseif f[2] ~= ARGV[4] then
    return {-2, f[2]}
  end
end

-- Writer preference: a waiting exclusive acquirer's live claim makes new
-- shared and permit requests wait behind it. While the hash lives, '!'
-- carries the latest claim (acquire.lua and release.lua keep it); a new
-- hash starts from the claims themselves.
local claim_ends = num(5)
if fresh then
  local claim = redis.call('ZRANGE', KEYS[4], -1, -1, 'WITHSCORES')
  claim_ends = 0
  if #claim > 0 then
    claim_ends = tonumber(claim[2])
    if claim_ends <= now then
      redis.call('DEL', KEYS[4]) -- the latest claim ended, so all did
    end
  end
end
if claim_ends > now then
  return {0, claim_ends - now, 0}
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
enter(string.format('%.0f', n))
return {1, n, free(held + 1)}
