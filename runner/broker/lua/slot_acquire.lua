-- slot_acquire: take a slot of a shared limit if fewer than `concurrency` are held and fewer than
-- `per_minute` calls started in the last minute.
--
-- KEYS[1] held           the limit's slots held now, scored by expiry ms
-- KEYS[2] minute         the limit's call times of the last minute
-- ARGV[1] now_ms
-- ARGV[2] concurrency
-- ARGV[3] hold_ms        a slot lapses this long after it was taken or last renewed
-- ARGV[4] token          this slot's member
-- ARGV[5] per_minute     0: no per-minute limit
-- Returns 0 when taken, else how many ms to wait before asking again.
local held, minute = KEYS[1], KEYS[2]
local now, concurrency, hold_ms = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local token, per_minute = ARGV[4], tonumber(ARGV[5])

redis.call('ZREMRANGEBYSCORE', held, '-inf', now)
if redis.call('ZCARD', held) >= concurrency then return 20 end
if per_minute > 0 then
  redis.call('ZREMRANGEBYSCORE', minute, '-inf', now - 60000)
  if redis.call('ZCARD', minute) >= per_minute then
    local oldest = redis.call('ZRANGE', minute, 0, 0, 'WITHSCORES')
    return math.max(1, tonumber(oldest[2]) + 60000 - now)
  end
  redis.call('ZADD', minute, now, token)
  redis.call('PEXPIRE', minute, 61000)
end
redis.call('ZADD', held, now + hold_ms, token)
redis.call('PEXPIRE', held, hold_ms + 60000)
return 0
