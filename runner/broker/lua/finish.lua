-- finish: take jobs off the queue for good, a batch of one worker's jobs of one queue in one call: keep each
-- job's result, drop its payload, try counter, lease (only if still ours), queue entry and abort request.
-- One call for the batch, not one per job: a call's own cost (packing, EVALSHA, the reply) was most of a
-- finish's, and every key is built from the queue's prefixes, so the batch stays in the queue's slot.
--
-- KEYS[1] queue          the queue's sorted set of job ids
-- KEYS[2] leases         this worker's lease set
-- KEYS[3] abort          the queue's abort requests
-- ARGV[1] worker         this worker's id
-- ARGV[2] job_prefix     + job id: a job's payload
-- ARGV[3] try_prefix     + job id: a job's try counter
-- ARGV[4] result_prefix  + job id: a job's result
-- ARGV[5] lease_prefix   + job id: a job's lease
-- ARGV[6..] per job, three entries: job_id, result envelope ('' for none), keep_result_ms (0: keep it for ever)
-- Returns how many jobs it finished.
local queue, leases, abort = KEYS[1], KEYS[2], KEYS[3]
local worker, job_prefix, try_prefix, result_prefix, lease_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

local ids = {}
for i = 6, #ARGV, 3 do
  local id, envelope, keep_ms = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  ids[#ids + 1] = id
  if envelope ~= '' then
    local result = result_prefix .. id
    if keep_ms > 0 then redis.call('SET', result, envelope, 'PX', keep_ms) else redis.call('SET', result, envelope) end
  end
  redis.call('DEL', job_prefix .. id, try_prefix .. id)
  local lease = lease_prefix .. id
  -- pcall: a lease key something else made another type is not ours to drop, nor a reason to stop the batch.
  if redis.pcall('GET', lease) == worker then redis.call('DEL', lease) end
end
-- Many members a command, in chunks that stay well inside Lua's stack for unpack().
for first = 1, #ids, 1000 do
  local last = math.min(first + 999, #ids)
  redis.call('SREM', leases, unpack(ids, first, last))
  redis.call('ZREM', queue, unpack(ids, first, last))
  redis.call('ZREM', abort, unpack(ids, first, last))
end
return #ids
