-- claim: lease up to `want` due jobs for one worker, first taking the jobs enqueues handed to it.
-- Leased jobs are skipped without being read, and the scan looks past them (bounded by `scan`), so an
-- idle worker never starves behind another's running jobs (arq's fixed queue_read_limit does).
-- With nothing to run, the worker registers as idle, so the next enqueue hands its job straight over.
--
-- KEYS[1] queue          the queue's sorted set of job ids, scored by due ms
-- KEYS[2] leases         this worker's lease set
-- KEYS[3] wake           the queue's wake-up list
-- KEYS[4] idle           the queue's idle workers
-- KEYS[5] inbox          this worker's inbox
-- KEYS[6] abort          the queue's abort requests
-- ARGV[1] now_ms
-- ARGV[2] want           how many jobs at most (the worker's free slots)
-- ARGV[3] lease_ms
-- ARGV[4] worker         this worker's id
-- ARGV[5] scan           how many due ids to look at, at most
-- ARGV[6] lease_prefix   + job id: a job's lease
-- ARGV[7] job_prefix     + job id: a job's payload
-- ARGV[8] try_prefix     + job id: a job's try counter
-- ARGV[9] try_ttl_ms
-- ARGV[10] idle_member   "<lease ms>:<worker>"
-- ARGV[11] idle_until_ms when this worker's idle entry lapses; 0: do not register as idle (a worker serving
--                        several queues with fewer free slots than queues takes no hand-offs, only wake-ups)
-- Returns {next due ms or -1 (only when idle), {{id, payload, try, due ms, aborted 0|1}, ...}}.
local queue, leases, wake, idle, inbox, abort = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local now, want, lease_ms, worker, scan = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
local lease_prefix, job_prefix, try_prefix, try_ttl_ms = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local idle_member, idle_until_ms = ARGV[10], ARGV[11]

local out, got, offset = {}, 0, 0
-- No longer idle; take what enqueues handed us since our last wait (only if still leased to us), up to
-- `want`: past it (a worker of several queues given no slot on this one) give it back, with its try.
redis.call('ZREM', idle, idle_member)
for _, item in ipairs(redis.call('LRANGE', inbox, 0, -1)) do
  local n, rest = string.match(item, '^(%d+)|(.*)$')
  local id = string.sub(rest, 1, tonumber(n))
  if redis.call('GET', lease_prefix .. id) == worker then
    if got < want then
      redis.call('PEXPIRE', lease_prefix .. id, lease_ms)
      out[#out + 1] = {id, redis.call('GET', job_prefix .. id), redis.call('GET', try_prefix .. id) or 1,
                       redis.call('ZSCORE', queue, id) or now, redis.call('ZSCORE', abort, id) and 1 or 0}
      got = got + 1
    else
      redis.call('DEL', lease_prefix .. id)
      redis.call('SREM', leases, id)
      if tonumber(redis.call('GET', try_prefix .. id) or '0') > 0 then redis.call('DECR', try_prefix .. id) end
      redis.call('LPUSH', wake, 1)
    end
  end
end
redis.call('DEL', inbox)
-- Per job only what each needs: its lease, its try, its payload. The lease set is added to once, at the end;
-- abort requests are looked up only if there are any; a try counter is made with its TTL in one command (a
-- later try's INCR keeps it).
local leased, any_abort = {}, redis.call('ZCARD', abort) > 0
while got < want and offset < scan do
  local page = redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'WITHSCORES', 'LIMIT', offset, 200)
  if #page == 0 then break end
  for i = 1, #page, 2 do
    local id = page[i]
    if redis.call('SET', lease_prefix .. id, worker, 'NX', 'PX', lease_ms) then
      leased[#leased + 1] = id
      local try = 1
      if not redis.call('SET', try_prefix .. id, 1, 'NX', 'PX', try_ttl_ms) then try = redis.call('INCR', try_prefix .. id) end
      local aborted = any_abort and redis.call('ZSCORE', abort, id) and 1 or 0
      out[#out + 1] = {id, redis.call('GET', job_prefix .. id), try, page[i + 1], aborted}
      got = got + 1
      if got >= want then break end
    end
  end
  offset = offset + #page / 2
end
for first = 1, #leased, 1000 do  -- in chunks that stay well inside Lua's stack for unpack()
  redis.call('SADD', leases, unpack(leased, first, math.min(first + 999, #leased)))
end
if got > 0 then
  redis.call('PEXPIRE', leases, lease_ms * 4)
  return {-1, out}
end
-- Nothing to run: register as idle, drop stale wake-ups (an enqueue after this script hands off or pushes
-- a fresh one, so none is lost), and say when the next deferred job falls due, so the caller sleeps that long.
if idle_until_ms ~= '0' then redis.call('ZADD', idle, idle_until_ms, idle_member) end
redis.call('DEL', wake)
local nxt = redis.call('ZRANGEBYSCORE', queue, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
return {nxt[2] or -1, out}
