-- celery_claim: take the oldest Celery message of the highest priority that has one into the intake's
-- processing list, atomically (kombu's producers LPUSH; its consumers take from the right: FIFO).
--
-- KEYS[1] processing     the intake's processing list
-- KEYS[2] lists...       the queue's list, then its priority lists, highest priority first
-- Returns the message, or false.
local processing, lists = KEYS[1], {unpack(KEYS, 2)}

for _, list in ipairs(lists) do
  local item = redis.call('RPOPLPUSH', list, processing)
  if item then return item end
end
return false
