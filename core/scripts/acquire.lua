-- Acquire: one round trip.
-- KEYS[1] lock key, KEYS[2] fence counter (same hash tag)
-- ARGV[1] owner token, ARGV[2] lease ms, ARGV[3] fence counter ms,
-- ARGV[4] (optional, Redlock) the value a new counter starts from instead
-- of the server clock: the same on every node, so that the nodes agree
-- Returns {1, fence} when acquired, {0, holder pttl} when held elsewhere.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  -- INCR keeps the counter's TTL, which is set only when the counter is
  -- (re)created: a counter lives ARGV[3] ms at most, so idle keys leave
  -- nothing behind. A new counter starts from the server clock in
  -- microseconds, above every fence issued before (see README).
  local n = redis.call('INCR', KEYS[2])
  if n == 1 then
    if ARGV[4] then
      n = tonumber(ARGV[4])
    else
      local t = redis.call('TIME')
      n = tonumber(t[1]) * 1000000 + tonumber(t[2])
    end
    redis.call('SET', KEYS[2], string.format('%.0f', n), 'PX', ARGV[3])
  end
  return {1, n}
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  -- Our own earlier send of this same attempt landed (a retry after an
  -- ambiguous network error): that is success, with a fresh full lease.
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
return {0, redis.call('PTTL', KEYS[1])}
