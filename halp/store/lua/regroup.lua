-- Part of the upgrade from layout 1: record the network group of entries of
-- layout 1, whose provenance ("SOURCE<tab>VIA") has none.  The caller
-- computes the groups (halp.model.address_group), which Lua cannot.
-- ARGV[2] = a label, then three arguments per entry: member, its provenance
-- as the caller read it, and its network group ('' for none).
-- An entry whose provenance changed since (a merge gave it a group of its
-- own, or it left the label) is left alone.  Returns how many were recorded.
local label = ARGV[2]
local key, d = P .. 'e:' .. label, P .. 'd:' .. label
local done = 0
for j = 3, #ARGV, 3 do
  local member, seen, group = ARGV[j], ARGV[j + 1], ARGV[j + 2]
  local score = redis.call('ZSCORE', key, member)
  if score and redis.call('HGET', d, member) == seen and not group_of(seen) then
    redis.call('HSET', d, member, seen .. '\t' .. group)
    if group ~= '' then
      redis.call('ZADD', group_key(label, group), score, member)
    end
    done = done + 1
  end
end
return done
