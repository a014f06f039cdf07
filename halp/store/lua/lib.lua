-- Shared by every HALP script (prepended to each one).  See halp/store/redis.py
-- for the key layout.  KEYS = {meta, feed, ix, low}; ARGV[1] = the key prefix
-- (hash tag included), so that every key a script touches shares one slot.
local P = ARGV[1]
local META, FEED, IX, LOW = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

-- A whole number as Redis should receive it (never "1e+14"; "%.0f" is exact
-- up to 2^53 where "%d" would go through a C long, 32 bits on some builds).
local function num(x)
  return string.format('%.0f', x)
end

-- The label above NAME, or '' for a top-level label.
local function parent(name)
  return string.match(name, '^(.*)/[^/]*$') or ''
end

-- Record in LOW the oldest confirmed time still held by LABEL (or drop it).
local function set_low(label)
  local last = redis.call('ZRANGE', P .. 'e:' .. label, -1, -1, 'WITHSCORES')
  if #last == 0 then
    redis.call('ZREM', LOW, label)
  else
    redis.call('ZADD', LOW, num(-tonumber(last[2])), label)
  end
end

-- The sorted set of LABEL's entries of network group GROUP (never ''), scored
-- and ordered as P:e:LABEL.  Labels hold no space, so LABEL ends at the first.
local function group_key(label, group)
  return P .. 'g:' .. label .. ' ' .. group
end

-- The network group in a provenance value "SOURCE<tab>VIA<tab>GROUP", or nil
-- for a value of layout 1 ("SOURCE<tab>VIA", not yet regrouped) or none.
local function group_of(provenance)
  if not provenance then
    return nil
  end
  return string.match(provenance, '^[^\t]*\t[^\t]*\t(.*)$')
end

-- Forget one entry of LABEL everywhere but P:e:LABEL, which the caller
-- updates (provenance, network group, change feed).
local function drop(label, member)
  local d = P .. 'd:' .. label
  local group = group_of(redis.call('HGET', d, member))
  if group and group ~= '' then
    redis.call('ZREM', group_key(label, group), member)
  end
  redis.call('HDEL', d, member)
  redis.call('ZREM', FEED, label .. '\n' .. member)
end

-- Move the index time of LABEL and of each label above it forward to WHEN.
local function touch(label, when)
  local name = label
  while true do
    local current = redis.call('ZSCORE', IX, name)
    if not current or -tonumber(current) < when then
      redis.call('ZADD', P .. 'i:' .. parent(name), num(-when), name)
      redis.call('ZADD', IX, num(-when), name)
    end
    local above = string.match(name, '^(.*)/[^/]*$')
    if not above then
      return
    end
    name = above
  end
end
