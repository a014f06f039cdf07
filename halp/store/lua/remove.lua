-- ARGV[2] = the label, then the members to remove.  Returns how many were there.
local label = ARGV[2]
local key = P .. 'e:' .. label
local removed = 0
for j = 3, #ARGV do
  if redis.call('ZREM', key, ARGV[j]) == 1 then
    drop(label, ARGV[j])
    removed = removed + 1
  end
end
set_low(label)
return removed
