-- enqueue: refuse a duplicate id, store the payload, queue it, and either hand it to an idle worker
-- (lease it to that worker, count the try, push it into the worker's inbox) or push a wake-up token.
--
-- KEYS[1] queue          the queue's sorted set of job ids
-- KEYS[2] job            this job's payload key
-- KEYS[3] result         this job's result key (a kept result refuses the id too)
-- KEYS[4] wake           the queue's wake-up list
-- KEYS[5] idle           the queue's idle workers
-- KEYS[6] abort          the queue's abort requests
-- ARGV[1] job_id
-- ARGV[2] payload
-- ARGV[3] due_ms
-- ARGV[4] payload_ttl_ms
-- ARGV[5] now_ms
-- ARGV[6] lease_prefix   + job id: a job's lease
-- ARGV[7] try_prefix     + job id: a job's try counter
-- ARGV[8] leases_prefix  + worker id: a worker's lease set
-- ARGV[9] inbox_prefix   + worker id: a worker's inbox
-- ARGV[10] try_ttl_ms
-- Returns 0: refused (the id exists), 1: queued and a worker woken, 2: handed to an idle worker.
-- An inbox item is "<len(id)>|<id>|<try>|<due ms>|<aborted>|<payload>".
local queue, job, result, wake, idle, abort = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id, payload, due, payload_ttl_ms, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local lease_prefix, try_prefix, leases_prefix, inbox_prefix, try_ttl_ms = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]

if redis.call('EXISTS', job, result) > 0 then return 0 end
redis.call('SET', job, payload, 'PX', payload_ttl_ms)
redis.call('ZADD', queue, due, id)
if tonumber(due) <= tonumber(now) then
  redis.call('ZREMRANGEBYSCORE', idle, '-inf', now)
  local popped = redis.call('ZPOPMIN', idle)
  if popped[1] then
    local lease_ms, worker = string.match(popped[1], '^(%d+):(.*)$')
    if redis.call('SET', lease_prefix .. id, worker, 'NX', 'PX', lease_ms) then
      redis.call('SADD', leases_prefix .. worker, id)
      redis.call('PEXPIRE', leases_prefix .. worker, tonumber(lease_ms) * 4)
      local try = redis.call('INCR', try_prefix .. id)
      redis.call('PEXPIRE', try_prefix .. id, try_ttl_ms)
      local aborted = redis.call('ZSCORE', abort, id) and 1 or 0
      local inbox = inbox_prefix .. worker
      redis.call('RPUSH', inbox, #id .. '|' .. id .. '|' .. try .. '|' .. due .. '|' .. aborted .. '|' .. payload)
      redis.call('PEXPIRE', inbox, tonumber(lease_ms) * 4)
      return 2
    end
  end
end
redis.call('LPUSH', wake, 1)
redis.call('LTRIM', wake, 0, 999)
redis.call('PEXPIRE', wake, 60000)
return 1
