-- purge: ask the workers to cancel every job of a queue that nobody runs (no lease), a page at a time.
-- Cancelling goes through the workers, so each purged job's row ends `cancelled` and its failure hook
-- runs (nothing is left stuck); jobs running now are not touched.
--
-- KEYS[1] queue          the queue's sorted set of job ids
-- KEYS[2] abort          the queue's abort requests
-- ARGV[1] lease_prefix   + job id: a job's lease
-- ARGV[2] offset         where this page starts in the queue
-- ARGV[3] count          the page's size
-- ARGV[4] now_ms
-- ARGV[5] dry_run        '1': only count them
-- Returns {jobs marked (or that would be), ids looked at}.
local queue, abort = KEYS[1], KEYS[2]
local lease_prefix, offset, count, now, dry_run = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

local ids = redis.call('ZRANGE', queue, offset, tonumber(offset) + tonumber(count) - 1)
local marked = 0
for _, id in ipairs(ids) do
  if redis.call('EXISTS', lease_prefix .. id) == 0 then
    if dry_run ~= '1' then redis.call('ZADD', abort, now, id) end
    marked = marked + 1
  end
end
return {marked, #ids}
