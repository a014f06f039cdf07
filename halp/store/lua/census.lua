-- ARGV[2] = the oldest time still served, ARGV[3] = how many labels to list.
-- Returns the number of labels holding entries active since then, their
-- entries, and three values (name, entries, active time) for each of the
-- most recently active labels: at least ARGV[3] of them, more when several
-- share the last place (the caller orders ties by name).
local since, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local rows = {}
local total = 0
for _, name in ipairs(redis.call('ZRANGE', LOW, 0, -1)) do
  local active = redis.call('ZSCORE', IX, name)
  if active and -tonumber(active) >= since then
    local count = redis.call('ZCARD', P .. 'e:' .. name)
    total = total + count
    rows[#rows + 1] = {name, count, -tonumber(active)}
  end
end
table.sort(rows, function(a, b) return a[3] > b[3] end)
local out = {#rows, total}
if limit >= 1 then
  for k = 1, #rows do
    if k > limit and rows[k][3] < rows[limit][3] then
      break
    end
    out[#out + 1] = rows[k][1]
    out[#out + 1] = rows[k][2]
    out[#out + 1] = rows[k][3]
  end
end
return out
