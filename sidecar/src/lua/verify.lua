-- Verifies that a shard's epoch belongs to the running Redis process.
--
-- KEYS: epoch, incarnation. ARGV: the server's run_id (from INFO), candidate epoch.
-- Returns: 1 when the epoch was rotated, 0 when it was already verified.
--
-- A restarted Redis may hold an older snapshot: counters and versions that went backwards, so
-- that a superseded version looks current again. Any restart changes the run_id; the first
-- sidecar to connect to the new process rotates the epoch, which retires every version issued
-- before (design guarantee 1).
if redis.call('GET', KEYS[2]) == ARGV[1] and redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
return 1
