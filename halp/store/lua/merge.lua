-- ARGV[2] = the per-label cap, ARGV[3] = an epoch and ARGV[4] = the layout
-- version for a new data set, ARGV[5] = the per-group quota (0: none), then
-- six arguments per change: label, member ("HOST PORT"), time, source, via
-- and the source's network group ('' for none: exempt from the quota).
-- Returns two numbers per change: the stored time (-1: evicted by this
-- merge) and 1 if the change changed the store, else 0.
local cap, quota = tonumber(ARGV[2]), tonumber(ARGV[5])
redis.call('HSETNX', META, 'epoch', ARGV[3])
redis.call('HSETNX', META, 'version', ARGV[4])
local seq = tonumber(redis.call('HGET', META, 'seq') or '0')
local out = {}
local positions = {}
local order = {}
-- Where each LABEL<newline>MEMBER was merged so far, to report the entries
-- that the quota evicts.
local where = {}
local n = (#ARGV - 5) / 6
for i = 1, n do
  local b = 5 + (i - 1) * 6
  local label, member, ts = ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3])
  local group = ARGV[b + 6]
  if not positions[label] then
    positions[label] = {}
    order[#order + 1] = label
  end
  table.insert(positions[label], i)
  local item = label .. '\n' .. member
  if quota > 0 then
    where[item] = where[item] or {}
    table.insert(where[item], i)
  end
  local key = P .. 'e:' .. label
  local old = redis.call('ZSCORE', key, member)
  if old and -tonumber(old) >= ts then
    out[2 * i - 1] = -tonumber(old)
    out[2 * i] = 0
  else
    seq = seq + 1
    local d = P .. 'd:' .. label
    if old then
      local was = group_of(redis.call('HGET', d, member))
      if was and was ~= '' and was ~= group then
        redis.call('ZREM', group_key(label, was), member)
      end
    end
    redis.call('ZADD', key, num(-ts), member)
    redis.call('HSET', d, member, ARGV[b + 4] .. '\t' .. ARGV[b + 5] .. '\t' .. group)
    redis.call('ZADD', FEED, num(seq), item)
    out[2 * i - 1] = ts
    out[2 * i] = 1
    if group ~= '' then
      local g = group_key(label, group)
      redis.call('ZADD', g, num(-ts), member)
      if quota > 0 and redis.call('ZCARD', g) > quota then
        -- The group's entries beyond the quota are its oldest (the same
        -- order and ties as the cap).
        for _, victim in ipairs(redis.call('ZRANGE', g, quota, -1)) do
          redis.call('ZREM', key, victim)
          drop(label, victim)
          -- Even a member that drop could not place (one written by a
          -- process of layout 1 meanwhile) leaves the group.
          redis.call('ZREM', g, victim)
          for _, j in ipairs(where[label .. '\n' .. victim] or {}) do
            out[2 * j - 1] = -1
            out[2 * j] = 0
          end
        end
      end
    end
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
      if gone[ARGV[5 + (i - 1) * 6 + 2]] then
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
