-- ARGV[2] = the oldest time kept, ARGV[3] = the most entries to remove in
-- this call.  Returns how many entries were removed, and 1 if more remain.
local before, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
local removed = 0
for _, label in ipairs(redis.call('ZRANGEBYSCORE', LOW, '-inf', '(' .. num(before), 'LIMIT', 0, 100)) do
  if removed >= budget then
    break
  end
  local key = P .. 'e:' .. label
  local victims = redis.call('ZRANGEBYSCORE', key, '(' .. num(-before), '+inf', 'LIMIT', 0, budget - removed)
  for _, member in ipairs(victims) do
    redis.call('ZREM', key, member)
    drop(label, member)
  end
  removed = removed + #victims
  set_low(label)
end
if removed >= budget then
  return {removed, 1}
end
local names = redis.call('ZRANGEBYSCORE', IX, '(' .. num(-before), '+inf', 'LIMIT', 0, budget)
for _, name in ipairs(names) do
  redis.call('ZREM', P .. 'i:' .. parent(name), name)
  redis.call('ZREM', IX, name)
end
local left = redis.call('ZRANGEBYSCORE', LOW, '-inf', '(' .. num(before), 'LIMIT', 0, 1)
if #names >= budget or #left > 0 then
  return {removed, 1}
end
return {removed, 0}
