-- Every read and write of shards' state, atomically (design guarantees 1 and 6). One call
-- covers one or more shards that live on the same Redis node (all of them on a standalone
-- Redis, one on a cluster, where a script reaches one slot).
--
-- KEYS: per shard its epoch, seq, log and incarnation keys, then ("get"/"bump") one version key
--       per cache key of that shard.
-- ARGV: mode ("get", "bump" or "fence"), unused, channel (fence: the caller's own fence
--       channel), publish command (PUBLISH, or SPUBLISH on a cluster), replay log length,
--       number of shards, the serving process's run id (or ""), then
--       "get"/"bump": per shard a block: candidate epoch, the shard's channel, the newest epoch
--       and sequence the caller has seen for the shard ("" and 0 when none), n, n cache keys,
--       n unique nonces;
--       "fence": the fence's nonce, one candidate epoch per shard, then the caller's newest
--       epoch and sequence seen for each shard.
-- Returns: "get"/"bump": per shard { epoch, shard sequence after the call, version 1, ...,
--          version n }, concatenated; "fence": nothing (the states come back with the fence).
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
-- never "version 0". So does a sequence lower than one the caller has already seen in the same
-- epoch: the data went back in time without the process changing (a master demoted, resynced
-- from a replica that lacked its last writes and promoted again; an RDB reloaded in place), and
-- a version superseded by a lost bump would otherwise be current again.
--
-- "get" keeps a key's version when it has one of the current epoch and otherwise issues a new
-- one, as "bump" always does. Every issued version gets the next sequence number, a replay-log
-- entry and a published invalidation, in this one call. "fence" publishes one heartbeat on the
-- caller's own fence channel carrying every fenced shard's epoch and sequence: when the caller
-- receives it back on its subscription, it has received every invalidation published before it.
local run_id = ARGV[7]
if run_id == '' then
  run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
end

-- The epoch and sequence of the shard whose keys start at KEYS[k], rotating the epoch to
-- `candidate` when the shard's state is missing, was last served by another process, or is
-- older than the caller's newest (seen_epoch, seen_seq).
local function shard_state(k, candidate, seen_epoch, seen_seq)
  local epoch = redis.call('GET', KEYS[k])
  local seq = redis.call('GET', KEYS[k + 1])
  if not epoch or not seq then
    redis.call('SET', KEYS[k], candidate)
    redis.call('SET', KEYS[k + 1], 0)
    redis.call('DEL', KEYS[k + 2])
    redis.call('SET', KEYS[k + 3], run_id)
    return candidate, 0
  end
  seq = tonumber(seq)
  if redis.call('GET', KEYS[k + 3]) ~= run_id
      or (epoch == seen_epoch and seq < tonumber(seen_seq)) then
    epoch = candidate
    redis.call('SET', KEYS[k], epoch)
    redis.call('SET', KEYS[k + 3], run_id)
  end
  return epoch, seq
end

local mode = ARGV[1]
local channel = ARGV[3]
local publish = ARGV[4]

if mode == 'fence' then
  local message = { 'f', ARGV[8] }
  local n = tonumber(ARGV[6])
  for i = 1, n do
    local epoch, seq = shard_state(4 * i - 3, ARGV[8 + i], ARGV[7 + n + 2 * i], ARGV[8 + n + 2 * i])
    message[#message + 1] = epoch
    message[#message + 1] = tostring(seq)
  end
  redis.call(publish, channel, table.concat(message, '|'))
  return nil
end

local log_len = ARGV[5]
local now = redis.call('TIME')
local now_ms = tostring(now[1] * 1000 + math.floor(now[2] / 1000))
local out = {}
local k = 1 -- the current shard's first key
local a = 8 -- the current shard's first argument

for _ = 1, tonumber(ARGV[6]) do
  local shard_channel = ARGV[a + 1]
  local n = tonumber(ARGV[a + 4])
  local epoch, seq = shard_state(k, ARGV[a], ARGV[a + 2], ARGV[a + 3])
  local prefix = epoch .. '.'
  out[#out + 1] = epoch
  local seq_at = #out + 1
  out[seq_at] = ''
  for i = 1, n do
    local vkey = KEYS[k + 3 + i]
    local key = ARGV[a + 4 + i]
    local version = false
    if mode == 'get' then
      version = redis.call('GET', vkey)
      if version and string.sub(version, 1, #prefix) ~= prefix then
        version = false
      end
    end
    if not version then
      seq = seq + 1
      version = prefix .. seq .. '.' .. ARGV[a + 4 + n + i]
      local id = seq .. '-0'
      local added = redis.pcall('XADD', KEYS[k + 2], 'MAXLEN', '~', log_len, id,
        'k', key, 'v', version, 't', now_ms)
      if type(added) == 'table' and added.err then
        -- The log is ahead of the sequence (someone edited Redis by hand): start it afresh.
        redis.call('DEL', KEYS[k + 2])
        redis.call('XADD', KEYS[k + 2], 'MAXLEN', '~', log_len, id,
          'k', key, 'v', version, 't', now_ms)
      end
      redis.call('SET', vkey, version)
      redis.call(publish, shard_channel,
        'i|' .. epoch .. '|' .. seq .. '|' .. now_ms .. '|' .. version .. '|' .. key)
    end
    out[#out + 1] = version
  end
  redis.call('SET', KEYS[k + 1], seq)
  out[seq_at] = tostring(seq)
  k = k + 4 + n
  a = a + 5 + 2 * n
end
return out
