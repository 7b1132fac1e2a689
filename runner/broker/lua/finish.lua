-- finish: take a job off the queue for good: keep its result, drop its payload, try counter, lease
-- (only if still ours), queue entry and abort request.
--
-- KEYS[1] queue          the queue's sorted set of job ids
-- KEYS[2] leases         this worker's lease set
-- KEYS[3] job            the job's payload
-- KEYS[4] tries          the job's try counter
-- KEYS[5] result         the job's result
-- KEYS[6] lease          the job's lease
-- KEYS[7] abort          the queue's abort requests
-- ARGV[1] job_id
-- ARGV[2] worker         this worker's id
-- ARGV[3] result         the result envelope, or '' for none
-- ARGV[4] keep_result_ms 0: keep it for ever
local queue, leases, job, tries, result, lease, abort = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local id, worker, envelope, keep_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])

if envelope ~= '' then
  if keep_ms > 0 then redis.call('SET', result, envelope, 'PX', keep_ms) else redis.call('SET', result, envelope) end
end
redis.call('DEL', job, tries)
if redis.call('GET', lease) == worker then redis.call('DEL', lease) end
redis.call('SREM', leases, id)
redis.call('ZREM', queue, id)
redis.call('ZREM', abort, id)
return 1
