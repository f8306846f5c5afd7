-- Release: compare the owner token, delete, notify waiters. One round trip.
-- KEYS[1] lock key, KEYS[2] release channel, KEYS[3] fence counter;
-- KEYS[4] holder leases, KEYS[5] writers' claims (optional: shared and
-- permit holds, see acquire_shared.lua); KEYS[6] the store queue of
-- waiters (optional: see acquire.lua; each waiter's entry is
-- KEYS[6] .. ':' .. sha1hex(token), in the same slot)
-- ARGV[1] owner token, ARGV[2] publish command (PUBLISH or SPUBLISH),
-- ARGV[3] (optional, '' for none) the hold's fence,
-- ARGV[4] (optional) '1' to withdraw this token's writer claim,
-- ARGV[5] (with the queue) the lease ms of a hold granted to the queue's
-- head, ARGV[6] fence counter ms, ARGV[7] '1' when the token leaves the
-- queue (a waiter that gave up); ARGV[8] the kind of a shared or permit
-- hold ('s' shared, 'p' permit; none for an exclusive one): its entry in
-- the holders' hash goes, and a share's end wakes no one while other
-- shares remain (it frees nothing)
-- Returns 1 + the number of subscribers that received the notice; -2 - that
-- number when the lock went to the queue's head; -1 when the key is gone but
-- the fence counter still stands at our fence (no one acquired after us: a
-- re-sent release whose first send landed); 0 when the token does not hold
-- the lock.
if ARGV[7] == '1' and redis.call('DEL', KEYS[6] .. ':' .. redis.sha1hex(ARGV[1])) == 1 then
  redis.call('LREM', KEYS[6], 1, ARGV[1])
end
if ARGV[4] == '1' and KEYS[5] and redis.call('ZREM', KEYS[5], ARGV[1]) == 1 then
  -- The holders' hash carries the latest claim (acquire_shared.lua): now
  -- the latest of those left, if any. Readers held back may go now.
  if redis.call('TYPE', KEYS[1])['ok'] == 'hash' then
    local top = redis.call('ZRANGE', KEYS[5], -1, -1, 'WITHSCORES')
    if #top > 0 then
      redis.call('HSET', KEYS[1], '!', top[2])
    else
      redis.call('HDEL', KEYS[1], '!')
    end
  end
  redis.call(ARGV[2], KEYS[2], '1')
end

-- Hand the lock to the first live waiter of the queue (its entry still
-- exists; deleting it takes the waiter out): its token, a new fence, a
-- short lease its confirmation extends; the notice names it (by the hash
-- of its token) with the fence and the lease.
local function grant_next()
  while true do
    local tok = redis.call('LPOP', KEYS[6])
    if not tok then
      return nil
    end
    local id = redis.sha1hex(tok)
    if redis.call('DEL', KEYS[6] .. ':' .. id) == 1 then
      redis.call('SET', KEYS[1], tok, 'PX', ARGV[5])
      local n = redis.call('INCR', KEYS[3])
      if n == 1 then
        local t = redis.call('TIME')
        n = tonumber(t[1]) * 1000000 + tonumber(t[2])
        redis.call('SET', KEYS[3], string.format('%.0f', n), 'PX', ARGV[6])
      end
      local msg = 'g ' .. id .. ' ' .. string.format('%.0f', n) .. ' ' .. ARGV[5]
      return -2 - redis.call(ARGV[2], KEYS[2], msg)
    end
  end
end

-- resent reports a release whose first send landed: the key no longer
-- holds us, but the fence counter still stands at our fence.
local function resent()
  if ARGV[3] and ARGV[3] ~= '' and redis.call('GET', KEYS[3]) == ARGV[3] then
    return -1
  end
  return 0
end

if ARGV[8] == 's' or ARGV[8] == 'p' then
  -- One shared or permit hold ends: its lease entry (kept in step with its
  -- entry in the hash) says it still holds. The keys live on with the
  -- others (as long as their longest lease; a holder that died is dropped
  -- by the next acquire), or go with the last one. The two earliest lease
  -- entries tell the last holder apart in one call.
  local first = redis.call('ZRANGE', KEYS[4], 0, 1)
  if #first == 1 and first[1] == ARGV[1] then
    redis.call('DEL', KEYS[1], KEYS[4])
  else
    if redis.call('ZREM', KEYS[4], ARGV[1]) == 0 then
      return resent()
    end
    redis.call('HDEL', KEYS[1], ARGV[1])
    if ARGV[8] == 's' then
      return 1 -- other shares remain: no waiter can proceed now
    end
  end
  return 1 + redis.call(ARGV[2], KEYS[2], '1')
end

local v = redis.pcall('GET', KEYS[1])
if v == ARGV[1] then
  local g = KEYS[6] and grant_next()
  if g then
    return g -- the grant replaced our token
  end
  redis.call('DEL', KEYS[1])
  return 1 + redis.call(ARGV[2], KEYS[2], '1')
end
if not v or type(v) == 'table' then
  return resent() -- gone, or shared holders have the key now
end
return 0
