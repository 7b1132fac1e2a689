-- claim_one: lease one named job if it is queued and nobody holds it (to cancel an aborted job at once
-- instead of waiting for its turn).
--
-- KEYS[1] queue          the queue's sorted set of job ids
-- KEYS[2] leases         this worker's lease set
-- KEYS[3] lease          the job's lease
-- KEYS[4] job            the job's payload
-- KEYS[5] tries          the job's try counter
-- ARGV[1] job_id
-- ARGV[2] worker         this worker's id
-- ARGV[3] lease_ms
-- Returns {id, payload, try, due ms, 1} or false.
local queue, leases, lease, job, tries = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, worker, lease_ms = ARGV[1], ARGV[2], ARGV[3]

local due = redis.call('ZSCORE', queue, id)
if not due then return false end
if not redis.call('SET', lease, worker, 'NX', 'PX', lease_ms) then return false end
redis.call('SADD', leases, id)
local try = redis.call('INCR', tries)
return {id, redis.call('GET', job), try, due, 1}
