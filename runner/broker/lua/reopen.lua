-- reopen: clear what a finished job left in Redis so it can be enqueued again under its id (an operator's
-- retry): its kept result, its abort request, and a try counter that continues from the tries it used,
-- so the attempts of the new run are numbered after the old ones. A job still queued is left alone.
--
-- KEYS[1] queue          the queue's sorted set of job ids
-- KEYS[2] result         the job's kept result
-- KEYS[3] tries          the job's try counter
-- KEYS[4] abort          the queue's abort requests
-- ARGV[1] job_id
-- ARGV[2] tries_used     attempts of the earlier runs
-- ARGV[3] try_ttl_ms
-- Returns 1 if the job can be enqueued now, 0 if it is still in the queue.
local queue, result, tries, abort = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, tries_used, try_ttl_ms = ARGV[1], ARGV[2], ARGV[3]

if redis.call('ZSCORE', queue, id) then return 0 end
redis.call('DEL', result)
redis.call('SET', tries, tries_used, 'PX', try_ttl_ms)
redis.call('ZREM', abort, id)
return 1
