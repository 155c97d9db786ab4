-- Every read and write of one shard's state, atomically (design guarantees 1 and 6).
--
-- KEYS: epoch, seq, log, incarnation, then one version key per cache key.
-- ARGV: mode ("get", "bump" or "fence"), candidate epoch, channel, publish command (PUBLISH,
--       or SPUBLISH on a cluster), replay log length, n, the serving process's run id (or ""),
--       then n cache keys, then n unique nonces; for "fence": sender id, nonce after the
--       first seven.
-- Returns: { epoch, shard sequence after the call, version 1, ..., version n }.
--
-- Incarnation. A Redis that restarted may hold an older snapshot, and a promoted replica may
-- have missed the last writes: counters and versions that went backwards, so that a superseded
-- version would look current again. Every Redis process has its own run_id, and this script
-- knows it on every call: when the shard was last used by another process, the epoch is rotated
-- before anything else happens, which retires every version issued before. The caller passes
-- the run id when its connection reaches one process (read when it was opened: a connection
-- cannot outlive its process), saving an INFO per call; otherwise ("", a cluster connection
-- that may be routed to any node) the script reads it here. A missing epoch or
-- sequence (FLUSHALL, a key deleted by hand) starts a new epoch too: "everything changed",
-- never "version 0".
--
-- "get" keeps a key's version when it has one of the current epoch and otherwise issues a new
-- one, as "bump" always does. Every issued version gets the next sequence number, a replay-log
-- entry and a published invalidation, in this one call. "fence" publishes a heartbeat carrying
-- the shard's epoch and sequence: when its sender receives it back, it has received every
-- invalidation published before it.
local run_id = ARGV[7]
if run_id == '' then
  run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
end
local epoch = redis.call('GET', KEYS[1])
local seq = redis.call('GET', KEYS[2])
if not epoch or not seq then
  epoch = ARGV[2]
  seq = 0
  redis.call('SET', KEYS[1], epoch)
  redis.call('SET', KEYS[2], 0)
  redis.call('DEL', KEYS[3])
  redis.call('SET', KEYS[4], run_id)
else
  seq = tonumber(seq)
  if redis.call('GET', KEYS[4]) ~= run_id then
    epoch = ARGV[2]
    redis.call('SET', KEYS[1], epoch)
    redis.call('SET', KEYS[4], run_id)
  end
end

local mode = ARGV[1]
local channel = ARGV[3]
local publish = ARGV[4]

if mode == 'fence' then
  redis.call(publish, channel, 'h|' .. epoch .. '|' .. seq .. '|' .. ARGV[8] .. '|' .. ARGV[9])
  return { epoch, tostring(seq) }
end

local log_len = ARGV[5]
local n = tonumber(ARGV[6])
local prefix = epoch .. '.'
local now = redis.call('TIME')
local now_ms = tostring(now[1] * 1000 + math.floor(now[2] / 1000))
local out = { epoch, '' }

for i = 1, n do
  local vkey = KEYS[4 + i]
  local key = ARGV[7 + i]
  local version = false
  if mode == 'get' then
    version = redis.call('GET', vkey)
    if version and string.sub(version, 1, #prefix) ~= prefix then
      version = false
    end
  end
  if not version then
    seq = seq + 1
    version = prefix .. seq .. '.' .. ARGV[7 + n + i]
    local id = seq .. '-0'
    local added = redis.pcall('XADD', KEYS[3], 'MAXLEN', '~', log_len, id,
      'k', key, 'v', version, 't', now_ms)
    if type(added) == 'table' and added.err then
      -- The log is ahead of the sequence (someone edited Redis by hand): start it afresh.
      redis.call('DEL', KEYS[3])
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', log_len, id, 'k', key, 'v', version, 't', now_ms)
    end
    redis.call('SET', vkey, version)
    redis.call(publish, channel,
      'i|' .. epoch .. '|' .. seq .. '|' .. now_ms .. '|' .. version .. '|' .. key)
  end
  out[2 + i] = version
end

redis.call('SET', KEYS[2], seq)
out[2] = tostring(seq)
return out
