-- Publishes a heartbeat fence on a shard's channel and returns the shard's state.
--
-- KEYS: epoch, seq, log. ARGV: candidate epoch, channel, sender id, nonce.
-- Returns: { epoch, seq }.
--
-- The heartbeat carries the shard's epoch and sequence as of this moment. Redis runs scripts
-- one at a time and delivers a channel's messages in order, so when the sender receives its
-- own heartbeat back it has received every invalidation with a lower sequence; if its mirror is
-- behind the carried sequence, something was lost and must be repaired.
local epoch = redis.call('GET', KEYS[1])
local seq = redis.call('GET', KEYS[2])
if not epoch or not seq then
  epoch = ARGV[1]
  seq = '0'
  redis.call('SET', KEYS[1], epoch)
  redis.call('SET', KEYS[2], 0)
  redis.call('DEL', KEYS[3])
end
redis.call('PUBLISH', ARGV[2], 'h|' .. epoch .. '|' .. seq .. '|' .. ARGV[3] .. '|' .. ARGV[4])
return { epoch, seq }
