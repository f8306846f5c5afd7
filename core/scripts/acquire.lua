-- Acquire an exclusive hold: one round trip.
-- KEYS[1] lock key, KEYS[2] fence counter (same hash tag);
-- KEYS[3] holder leases, KEYS[4] writers' claims (optional: shared and
-- permit holds, see acquire_shared.lua)
-- ARGV[1] owner token, ARGV[2] lease ms, ARGV[3] fence counter ms,
-- ARGV[4] (optional, Redlock; '' for none) the value a new counter starts
-- from instead of the server clock: the same on every node, so that the
-- nodes agree.
-- ARGV[5] (optional) claim ms: when refused by shared or permit holders,
-- record this waiting writer's claim so new shared holds queue behind it;
-- ARGV[6] (optional) '1' when an earlier attempt recorded a claim, which a
-- grant withdraws.
-- KEYS[5] the store queue of waiters (a list of tokens); each waiter's
-- entry, KEYS[5] .. ':' .. sha1hex(token) in the same slot, exists while
-- the waiter is alive; ARGV[7] (optional) the entry's life ms: a request
-- refused by an exclusive holder joins the queue (or renews its entry), and
-- a release grants the lock to the queue's head (release.lua); ARGV[8]
-- '1' when an earlier attempt of this token joined the queue, which a grant
-- leaves.
-- Returns {1, fence} when acquired, {0, holder pttl, claimed, queued} when
-- held elsewhere, and when queued also the fence counter as it stands: a
-- grant notice whose fence is not above it came before this refusal (the
-- waiter had not read it yet) and is void, since the grant lapsed.
local function grant()
  -- INCR keeps the counter's TTL, which is set only when the counter is
  -- (re)created: a counter lives ARGV[3] ms at most, so idle keys leave
  -- nothing behind. A new counter starts from the server clock in
  -- microseconds, above every fence issued before (see docs/topologies.md).
  local n = redis.call('INCR', KEYS[2])
  if n == 1 then
    if ARGV[4] and ARGV[4] ~= '' then
      n = tonumber(ARGV[4])
    else
      local t = redis.call('TIME')
      n = tonumber(t[1]) * 1000000 + tonumber(t[2])
    end
    redis.call('SET', KEYS[2], string.format('%.0f', n), 'PX', ARGV[3])
  end
  if ARGV[6] == '1' and KEYS[4] then
    redis.call('ZREM', KEYS[4], ARGV[1])
  end
  if ARGV[8] == '1' and redis.call('DEL', KEYS[5] .. ':' .. redis.sha1hex(ARGV[1])) == 1 then
    redis.call('LREM', KEYS[5], 1, ARGV[1]) -- queued earlier: leave
  end
  return {1, n}
end

if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return grant()
end
local v = redis.pcall('GET', KEYS[1])
if v == ARGV[1] then
  -- Our own earlier send of this same attempt landed (a retry after an
  -- ambiguous network error): that is success, with a fresh full lease.
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
if type(v) ~= 'table' or not KEYS[4] then
  local pttl = redis.call('PTTL', KEYS[1])
  if not ARGV[7] or v == false then
    return {0, pttl, 0, 0}
  end
  -- Join the queue behind the holder, or renew this request's entry (a
  -- waiter that died falls out when its entry ends). The queue lives as
  -- long as its longest entry.
  local life = ARGV[7]
  local entry = KEYS[5] .. ':' .. redis.sha1hex(ARGV[1])
  if redis.call('SET', entry, '1', 'NX', 'PX', life) then
    if redis.call('RPUSH', KEYS[5], ARGV[1]) == 1 then
      redis.call('PEXPIRE', KEYS[5], life)
    else
      redis.call('PEXPIRE', KEYS[5], life, 'GT')
    end
  else
    redis.call('PEXPIRE', entry, life)
    redis.call('PEXPIRE', KEYS[5], life, 'GT')
  end
  return {0, pttl, 0, 1, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
-- A hash: shared or permit holders. Drop those whose own lease ended; if
-- none is left the key is free.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
if #dead > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  redis.call('HDEL', KEYS[1], unpack(dead))
end
if redis.call('ZCARD', KEYS[3]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[3])
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return grant()
end
local pttl = redis.call('PTTL', KEYS[1])
local claimed = 0
if ARGV[5] and ARGV[5] ~= '' then
  local until_ms = now + math.max(tonumber(ARGV[5]), 2 * pttl)
  redis.call('ZADD', KEYS[4], until_ms, ARGV[1])
  local top = redis.call('ZRANGE', KEYS[4], -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[4], math.max(tonumber(top[2]) - now, 1))
  -- the holders' hash carries the latest claim for acquire_shared.lua
  redis.call('HSET', KEYS[1], '!', top[2])
  claimed = 1
end
return {0, pttl, claimed}
