-- ARGV[2] = an epoch for a new data set, ARGV[3] and ARGV[4] = the epoch and
-- change number of the caller's cursor, ARGV[5] = the most changes to return,
-- ARGV[6] = the oldest time still served.
-- Returns the epoch, the last change number returned (or the cursor's), 1 if
-- more changes follow, then four values per change: label, member, time and
-- provenance ("SOURCE\tVIA").
redis.call('HSETNX', META, 'epoch', ARGV[2])
local epoch = redis.call('HGET', META, 'epoch')
local after = 0
if ARGV[3] == epoch then
  after = tonumber(ARGV[4])
end
local limit, since = tonumber(ARGV[5]), tonumber(ARGV[6])
local out = {epoch, after, 0}
local found, pos = 0, after
while true do
  local batch = redis.call('ZRANGEBYSCORE', FEED, '(' .. num(pos), '+inf', 'WITHSCORES', 'LIMIT', 0, 512)
  for j = 1, #batch, 2 do
    local item, seq = batch[j], tonumber(batch[j + 1])
    pos = seq
    local cut = string.find(item, '\n', 1, true)
    local label, member = string.sub(item, 1, cut - 1), string.sub(item, cut + 1)
    local score = redis.call('ZSCORE', P .. 'e:' .. label, member)
    if score and -tonumber(score) >= since then
      if found >= limit then
        out[3] = 1
        return out
      end
      out[#out + 1] = label
      out[#out + 1] = member
      out[#out + 1] = -tonumber(score)
      out[#out + 1] = redis.call('HGET', P .. 'd:' .. label, member) or '\t'
      found = found + 1
      out[2] = seq
    end
  end
  if #batch < 1024 then
    return out
  end
end
