-- ARGV[2] = an epoch for a new data set, ARGV[3] = a node name for it.
-- Returns the data set's layout version and its node name.
redis.call('HSETNX', META, 'epoch', ARGV[2])
redis.call('HSETNX', META, 'version', '1')
redis.call('HSETNX', META, 'node', ARGV[3])
return {tonumber(redis.call('HGET', META, 'version')), redis.call('HGET', META, 'node')}
