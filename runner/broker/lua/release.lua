-- release: drop our lease and make the job due again. Giving the try back is for a graceful stop or a
-- busy shared limit: the job was not really tried, so it must not use up one of its tries.
--
-- KEYS[1] queue          the queue's sorted set of job ids
-- KEYS[2] leases         this worker's lease set
-- KEYS[3] wake           the queue's wake-up list
-- KEYS[4] lease          the job's lease
-- KEYS[5] job            the job's payload
-- KEYS[6] tries          the job's try counter
-- ARGV[1] job_id
-- ARGV[2] worker         this worker's id
-- ARGV[3] due_ms
-- ARGV[4] give_back_try  '1' or '0'
-- ARGV[5] now_ms
-- Returns 1 if the lease was ours and is released, else 0.
local queue, leases, wake, lease, job, tries = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id, worker, due, give_back_try, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

redis.call('SREM', leases, id)
if redis.call('GET', lease) ~= worker then return 0 end
redis.call('DEL', lease)
if redis.call('EXISTS', job) == 1 then
  redis.call('ZADD', queue, due, id)
  if tonumber(due) <= tonumber(now) then redis.call('LPUSH', wake, 1) end
end
if give_back_try == '1' and tonumber(redis.call('GET', tries) or '0') > 0 then redis.call('DECR', tries) end
return 1
