-- renew: extend the leases this worker still owns, in one round trip for all of its jobs.
--
-- KEYS[1] leases         this worker's lease set
-- ARGV[1] lease_prefix   + job id: a job's lease
-- ARGV[2] worker         this worker's id
-- ARGV[3] lease_ms
-- ARGV[4..] job ids
-- Returns the ids whose lease is no longer ours.
local leases = KEYS[1]
local lease_prefix, worker, lease_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])

local lost = {}
for i = 4, #ARGV do
  local lease = lease_prefix .. ARGV[i]
  if redis.call('GET', lease) == worker then redis.call('PEXPIRE', lease, lease_ms) else lost[#lost + 1] = ARGV[i] end
end
redis.call('PEXPIRE', leases, lease_ms * 4)
return lost
