-- withdraw: stop being idle without claiming (the worker is full or stopping): leave the idle set and
-- give back what enqueues handed us meanwhile, with its try, to be claimed by whoever is free.
--
-- KEYS[1] idle           the queue's idle workers
-- KEYS[2] inbox          this worker's inbox
-- KEYS[3] leases         this worker's lease set
-- KEYS[4] wake           the queue's wake-up list
-- ARGV[1] idle_member    our entry in the idle set
-- ARGV[2] worker         this worker's id
-- ARGV[3] lease_prefix   + job id: a job's lease
-- ARGV[4] try_prefix     + job id: a job's try counter
-- Returns how many jobs were given back.
local idle, inbox, leases, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local idle_member, worker, lease_prefix, try_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

redis.call('ZREM', idle, idle_member)
local n = 0
for _, item in ipairs(redis.call('LRANGE', inbox, 0, -1)) do
  local len, rest = string.match(item, '^(%d+)|(.*)$')
  local id = string.sub(rest, 1, tonumber(len))
  if redis.call('GET', lease_prefix .. id) == worker then
    redis.call('DEL', lease_prefix .. id)
    redis.call('SREM', leases, id)
    if tonumber(redis.call('GET', try_prefix .. id) or '0') > 0 then redis.call('DECR', try_prefix .. id) end
    redis.call('LPUSH', wake, 1)
    n = n + 1
  end
end
redis.call('DEL', inbox)
return n
