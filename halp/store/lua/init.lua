-- ARGV[2] = an epoch for a new data set.  Returns the data set's layout version.
redis.call('HSETNX', META, 'epoch', ARGV[2])
redis.call('HSETNX', META, 'version', '1')
return tonumber(redis.call('HGET', META, 'version'))
