-- enqueue: refuse a duplicate id, store the payload, queue it, and either hand it to an idle worker
-- (lease it to that worker, count the try, push it into the worker's inbox) or push a wake-up token.
-- With a unique key (KEYS[7], see runner/unique.py) held by a job, that job takes the enqueue instead:
-- 'dedupe' answers with its id; 'debounce', while it waits unstarted, gives it this payload and due time.
--
-- KEYS[1] queue          the queue's sorted set of job ids
-- KEYS[2] job            this job's payload key
-- KEYS[3] result         this job's result key (a kept result refuses the id too)
-- KEYS[4] wake           the queue's wake-up list
-- KEYS[5] idle           the queue's idle workers
-- KEYS[6] abort          the queue's abort requests
-- KEYS[7] unique         optional: the unique key (its value: the id of the job holding it)
-- KEYS[8] takeovers      with KEYS[7]: how many debounces the key's jobs took (orders their rows' arguments)
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
-- ARGV[11] unique_ms     with KEYS[7]: the window (a dedupe key's life; a debounce key lives as its job's payload)
-- ARGV[12] mode          with KEYS[7]: 'dedupe' or 'debounce'
-- ARGV[13] job_prefix    with KEYS[7]: + job id: a job's payload
-- Returns 0: refused (the id exists), 1: queued and a worker woken, 2: handed to an idle worker. With a
-- unique key, {that code, job_id}, or {3, id of the key's job}: deduplicated, or {4, its id, n}: debounced,
-- the key's n-th debounce (n grows with each, so the last one Redis ran can win the job's row too).
-- An inbox item is "<len(id)>|<id>|<try>|<due ms>|<aborted>|<payload>".
local queue, job, result, wake, idle, abort = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id, payload, due, payload_ttl_ms, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local lease_prefix, try_prefix, leases_prefix, inbox_prefix, try_ttl_ms = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local unique, takeovers, unique_ms, mode, job_prefix = KEYS[7], KEYS[8], ARGV[11], ARGV[12], ARGV[13]

local function answer(code)
  if unique then return {code, id} end
  return code
end

if unique then
  local holder = redis.call('GET', unique)
  if holder and mode == 'dedupe' then return {3, holder} end
  -- Waiting unstarted: queued, never leased (a try counted), not being cancelled, payload present.
  if holder and redis.call('ZSCORE', queue, holder) and redis.call('EXISTS', lease_prefix .. holder) == 0
      and tonumber(redis.call('GET', try_prefix .. holder) or '0') == 0 and not redis.call('ZSCORE', abort, holder)
      and redis.call('EXISTS', job_prefix .. holder) == 1 then
    local n = redis.call('INCR', takeovers)  -- first: a script that errors part-way keeps its writes
    redis.call('PEXPIRE', takeovers, payload_ttl_ms)
    redis.call('SET', job_prefix .. holder, payload, 'PX', payload_ttl_ms)
    redis.call('ZADD', queue, 'XX', due, holder)
    redis.call('SET', unique, holder, 'PX', payload_ttl_ms)
    return {4, holder, n}
  end
end
if redis.call('EXISTS', job, result) > 0 then return answer(0) end
redis.call('SET', job, payload, 'PX', payload_ttl_ms)
redis.call('ZADD', queue, due, id)
-- A debounce key outlives its window: the job may wait past its due time (busy workers) and must still
-- take later enqueues until it starts.
if unique then redis.call('SET', unique, id, 'PX', mode == 'debounce' and payload_ttl_ms or unique_ms) end
if tonumber(due) <= tonumber(now) then
  redis.call('ZREMRANGEBYSCORE', idle, '-inf', now)
  local popped = redis.call('ZPOPMIN', idle)
  if popped[1] then
    local lease_ms, worker = string.match(popped[1], '^(%d+):(.*)$')
    if redis.call('SET', lease_prefix .. id, worker, 'NX', 'PX', lease_ms) then
      redis.call('SADD', leases_prefix .. worker, id)
      redis.call('PEXPIRE', leases_prefix .. worker, tonumber(lease_ms) * 4)
      local try = 1  -- made with its TTL in one command, as in claim.lua
      if not redis.call('SET', try_prefix .. id, 1, 'NX', 'PX', try_ttl_ms) then try = redis.call('INCR', try_prefix .. id) end
      local aborted = redis.call('ZSCORE', abort, id) and 1 or 0
      local inbox = inbox_prefix .. worker
      redis.call('RPUSH', inbox, #id .. '|' .. id .. '|' .. try .. '|' .. due .. '|' .. aborted .. '|' .. payload)
      redis.call('PEXPIRE', inbox, tonumber(lease_ms) * 4)
      return answer(2)
    end
  end
end
redis.call('LPUSH', wake, 1)
redis.call('LTRIM', wake, 0, 999)
redis.call('PEXPIRE', wake, 60000)
return answer(1)
