-- ARGV[2] = the per-label cap, ARGV[3] = an epoch for a new data set, then
-- five arguments per change: label, member ("HOST PORT"), time, source, via.
-- Returns two numbers per change: the stored time (-1: evicted at once) and
-- 1 if the change changed the store, else 0.
local cap = tonumber(ARGV[2])
redis.call('HSETNX', META, 'epoch', ARGV[3])
redis.call('HSETNX', META, 'version', '1')
local seq = tonumber(redis.call('HGET', META, 'seq') or '0')
local out = {}
local positions = {}
local order = {}
local n = (#ARGV - 3) / 5
for i = 1, n do
  local b = 3 + (i - 1) * 5
  local label, member, ts = ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3])
  if not positions[label] then
    positions[label] = {}
    order[#order + 1] = label
  end
  table.insert(positions[label], i)
  local key = P .. 'e:' .. label
  local old = redis.call('ZSCORE', key, member)
  if old and -tonumber(old) >= ts then
    out[2 * i - 1] = -tonumber(old)
    out[2 * i] = 0
  else
    seq = seq + 1
    redis.call('ZADD', key, num(-ts), member)
    redis.call('HSET', P .. 'd:' .. label, member, ARGV[b + 4] .. '\t' .. ARGV[b + 5])
    redis.call('ZADD', FEED, num(seq), label .. '\n' .. member)
    out[2 * i - 1] = ts
    out[2 * i] = 1
  end
end
redis.call('HSET', META, 'seq', num(seq))
for _, label in ipairs(order) do
  local key = P .. 'e:' .. label
  if redis.call('ZCARD', key) > cap then
    -- Newest first, ties by host then port: the oldest are at the end.
    local victims = redis.call('ZRANGE', key, cap, -1)
    redis.call('ZREMRANGEBYRANK', key, cap, -1)
    local gone = {}
    for _, member in ipairs(victims) do
      gone[member] = true
      drop(label, member)
    end
    for _, i in ipairs(positions[label]) do
      if gone[ARGV[3 + (i - 1) * 5 + 2]] then
        out[2 * i - 1] = -1
        out[2 * i] = 0
      end
    end
  end
  set_low(label)
  local newest = -1
  for _, i in ipairs(positions[label]) do
    if out[2 * i - 1] > newest then
      newest = out[2 * i - 1]
    end
  end
  if newest >= 0 then
    touch(label, newest)
  end
end
return out
