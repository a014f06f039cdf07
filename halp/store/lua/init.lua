-- ARGV[2] = an epoch for a new data set, ARGV[3] = a node name for it,
-- ARGV[4] = the layout version of the caller.
-- Upgrades a data set of an older layout.  Returns the data set's layout
-- version, its node name, and 1 while entries of layout 1 still wait for
-- their network group (see regroup.lua), else 0.
redis.call('HSETNX', META, 'epoch', ARGV[2])
local layout = tonumber(ARGV[4])
if redis.call('HSETNX', META, 'version', ARGV[4]) == 0 then
  local version = tonumber(redis.call('HGET', META, 'version'))
  if version == 1 and layout == 2 then
    -- Layout 2 keeps each entry's network group (P:g:LABEL GROUP, and a
    -- third field of P:d:LABEL).  Scripts take entries without one as of
    -- no group until the caller, told by 'regroup', computes theirs.
    redis.call('HSET', META, 'version', ARGV[4], 'regroup', '1')
  end
end
redis.call('HSETNX', META, 'node', ARGV[3])
return {
  tonumber(redis.call('HGET', META, 'version')),
  redis.call('HGET', META, 'node'),
  redis.call('HEXISTS', META, 'regroup'),
}
