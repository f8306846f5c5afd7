-- Hand-off: move a held lock to a new owner with a new fence, one round trip.
-- KEYS[1] lock key, KEYS[2] fence counter
-- ARGV[1] current token, ARGV[2] new token, ARGV[3] lease ms, ARGV[4] fence counter ms,
-- ARGV[5] (optional, Redlock) the value a new counter starts from (see acquire.lua)
-- Returns {1, fence} on success, {0, pttl} when ARGV[1] no longer holds it.
-- pcall: a hash (shared or permit holders) is simply not ours
local cur = redis.pcall('GET', KEYS[1])
if cur == ARGV[2] then
  -- retried after the first send landed
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
if cur ~= ARGV[1] then
  return {0, redis.call('PTTL', KEYS[1])}
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
local n = redis.call('INCR', KEYS[2])
if n == 1 then
  if ARGV[5] then
    n = tonumber(ARGV[5])
  else
    local t = redis.call('TIME')
    n = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  redis.call('SET', KEYS[2], string.format('%.0f', n), 'PX', ARGV[4])
end
return {1, n}
