-- release_dead: free every lease a dead worker held, so its jobs run again now rather than when the
-- leases lapse, and forget its idle entry and inbox (their jobs are in its lease set too). The crash
-- keeps the try it used: a job that keeps killing its worker runs out of tries.
--
-- KEYS[1] leases         the dead worker's lease set
-- KEYS[2] wake           the queue's wake-up list
-- KEYS[3] idle           the queue's idle workers
-- KEYS[4] inbox          the dead worker's inbox
-- ARGV[1] lease_prefix   + job id: a job's lease
-- ARGV[2] worker         the dead worker's id
-- ARGV[3] idle_member    its entry in the idle set
-- Returns the ids released.
local leases, wake, idle, inbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local lease_prefix, worker, idle_member = ARGV[1], ARGV[2], ARGV[3]

local released = {}
redis.call('ZREM', idle, idle_member)
redis.call('DEL', inbox)
for _, id in ipairs(redis.call('SMEMBERS', leases)) do
  if redis.call('GET', lease_prefix .. id) == worker then
    redis.call('DEL', lease_prefix .. id)
    released[#released + 1] = id
    redis.call('LPUSH', wake, 1)
  end
end
redis.call('DEL', leases)
return released
