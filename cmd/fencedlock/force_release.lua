-- Force release (operator): evict whoever holds the lock, raise the fence
-- counter so the evicted holder's fence is stale, notify waiters.
-- KEYS[1] lock key, KEYS[2] fence counter, KEYS[3] release channel,
-- KEYS[4] holder leases of shared and permit holds
-- ARGV[1] publish command (PUBLISH or SPUBLISH), ARGV[2] counter ms for a
-- counter that has to be re-created
-- Returns {1, evicted tokens (comma-separated), new fence, subscribers
-- notified}, or {0, '', 0, 0} when the key is not held.
local typ = redis.call('TYPE', KEYS[1])['ok']
local tok
if typ == 'string' then
  tok = redis.call('GET', KEYS[1])
elseif typ == 'hash' then
  -- shared or permit holders: evict them all
  local toks = {}
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if #f > 1 then -- one-letter fields are bookkeeping (acquire_shared.lua)
      toks[#toks + 1] = f
    end
  end
  tok = table.concat(toks, ',')
else
  return {0, '', 0, 0}
end
redis.call('DEL', KEYS[1], KEYS[4])
-- INCR keeps the counter's TTL. A lost counter restarts from the server
-- clock in microseconds, as acquire.lua does, above every earlier fence.
local n = redis.call('INCR', KEYS[2])
if n == 1 then
  local t = redis.call('TIME')
  n = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('SET', KEYS[2], string.format('%.0f', n), 'PX', ARGV[2])
end
local subs = redis.call(ARGV[1], KEYS[3], '1')
return {1, tok, n, subs}
