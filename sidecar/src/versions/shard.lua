-- Every read and write of shards' state, atomically (design guarantees 1 and 6). One call
-- covers one or more shards that live on the same Redis node (all of them on a standalone
-- Redis, one on a cluster, where a script reaches one slot). Arguments are read in order by
-- `next_key` and `next_arg`; scripts.rs writes them in the same order.
--
-- ARGV, first: mode        "get", "bump", "read", "fence", "lease", "ack" or "prune"
--                publish     PUBLISH, or SPUBLISH on a cluster
--                log_len     replay log length (approximate cap of each shard's stream)
--                ttl_ms      version-key time to live in ms, refreshed by get and bump (0: none)
--                run_id      the serving process's run id, or "" (read here then)
--                lease_ms    the caller's read_lease_ms (0: off), for the quarantine
--                shards      number of shard blocks that follow
--      "fence":  fence_channel (the caller's own), nonce
--      "lease":  holder, grant ("<counter>|<lease_ms>", or "" to release)
--      "ack":    holder
-- then per shard:
--   KEYS: epoch, seq, log, incarnation, leases, then ("get"/"bump"/"read") n version keys
--   ARGV: candidate epoch (a fresh random one, used if the shard must start a new epoch),
--         seen epoch and seen seq (the newest the caller has seen; "" and 0 when none),
--         "get"/"bump"/"read": channel, n, n cache keys, then ("get"/"bump") n unique nonces
--         "lease": the holder's applied epoch and sequence of the shard
--         "ack": channel, the holder's applied epoch and sequence of the shard
--         "prune": field, value (removed if it still holds value), replacement ("": none)
-- Returns: "get"/"bump"/"read": per shard { epoch, shard sequence after the call, version 1,
--          ..., version n } and, "get"/"bump" only, { m, field 1, value 1, ..., field m,
--          value m }: the shard's lease table when the call issued a version there (else m = 0);
--          concatenated; "read" answers "" for a key without a current
--          version, and "" as the epoch of a shard whose epoch must rotate first (then every
--          version is ""); "lease": per shard { epoch, sequence } ("" and 0 where refused:
--          the holder is quarantined, see below); "fence", "ack", "prune": nothing.
--
-- Read leases (docs/design.md, "Read leases"). The hash `leases` of a shard maps a holder
-- ("<server_id>|<instance>") to its latest grant "<counter>|<lease_ms>", a value never
-- written twice; no Redis clock is involved: holders and bumpers time leases with their own
-- clocks. Two kinds of field are not holders: "!q" (the quarantine after the table may have
-- been lost, "<candidate epoch>|<lease_ms>") and "q|<epoch>|<seq>|<lease_ms>" written over a
-- holder that a bumper gave up waiting for at <seq>: that holder is refused a new grant until
-- it has applied <seq> of <epoch>.
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
-- entry and a published invalidation, in this one call; version keys live ttl_ms after their
-- last get or bump. "read" (what Check uses) writes nothing at all: a shard whose epoch would
-- have to rotate answers no version, and so does a key without one. "fence" publishes one
-- heartbeat on the caller's own fence channel carrying every fenced shard's epoch and sequence:
-- when the caller receives it back on its subscription, it has received every invalidation
-- published before it.
local key_at, arg_at = 0, 0
local function next_key()
  key_at = key_at + 1
  return KEYS[key_at]
end
local function next_arg()
  arg_at = arg_at + 1
  return ARGV[arg_at]
end

local mode = next_arg()
local publish = next_arg()
local log_len = next_arg()
local ttl_ms = tonumber(next_arg())
local run_id = next_arg()
local lease_ms = tonumber(next_arg())
local shards = tonumber(next_arg())
if run_id == '' then
  run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
end

-- One shard's state keys and the caller's arguments about it, in argument order.
-- (Sequential statements: Lua leaves the evaluation order inside a table constructor open.)
local function next_shard()
  local shard = {}
  shard.epoch_key = next_key()
  shard.seq_key = next_key()
  shard.log_key = next_key()
  shard.inc_key = next_key()
  shard.leases_key = next_key()
  shard.candidate = next_arg()
  shard.seen_epoch = next_arg()
  shard.seen_seq = tonumber(next_arg())
  return shard
end

-- The shard's epoch and sequence, or false when it must start a new epoch: its state is
-- missing, was last served by another process, or is older than what the caller has seen.
local function current_state(shard)
  local epoch = redis.call('GET', shard.epoch_key)
  local seq = tonumber(redis.call('GET', shard.seq_key))
  if not epoch or not seq or redis.call('GET', shard.inc_key) ~= run_id
      or (epoch == shard.seen_epoch and seq < shard.seen_seq) then
    return false
  end
  return epoch, seq
end

-- The shard's epoch and sequence, starting a new epoch (the candidate) first when it must.
-- The sequence and the replay log survive a rotation, unless the state is missing.
local function settled_state(shard)
  local epoch, seq = current_state(shard)
  if epoch then
    return epoch, seq
  end
  seq = tonumber(redis.call('GET', shard.seq_key))
  if not seq or not redis.call('GET', shard.epoch_key) then
    seq = 0
    redis.call('SET', shard.seq_key, 0)
    redis.call('DEL', shard.log_key)
  end
  redis.call('SET', shard.epoch_key, shard.candidate)
  redis.call('SET', shard.inc_key, run_id)
  -- The lease table may have been lost with the data, or may hold grants a holder still uses
  -- under the old epoch: every bump of the new epoch waits out the longest lease known.
  local quarantine = lease_ms
  local fields = redis.call('HGETALL', shard.leases_key)
  for i = 2, #fields, 2 do
    quarantine = math.max(quarantine, tonumber(string.match(fields[i], '|(%d+)$')) or 0)
  end
  if quarantine > 0 then
    redis.call('HSET', shard.leases_key, '!q', shard.candidate .. '|' .. quarantine)
  end
  return shard.candidate, seq
end

-- Whether a holder that applied `seq` of `epoch` may be granted the shard now: not while a
-- bumper gave up waiting for its acknowledgement of a later bump ("q|<epoch>|<seq>|...").
local function may_grant(field_value, epoch, seq)
  if not field_value or string.sub(field_value, 1, 2) ~= 'q|' then
    return true
  end
  local q_epoch, q_seq = string.match(field_value, '^q|([^|]*)|(%d+)|')
  return q_epoch == epoch and seq >= tonumber(q_seq)
end

if mode == 'fence' then
  local fence_channel = next_arg()
  local message = { 'f', next_arg() }
  for _ = 1, shards do
    local epoch, seq = settled_state(next_shard())
    message[#message + 1] = epoch
    message[#message + 1] = tostring(seq)
  end
  redis.call(publish, fence_channel, table.concat(message, '|'))
  return nil
end

-- A key's version if it belongs to `epoch`, else false.
local function version_of(version_key, epoch)
  local version = redis.call('GET', version_key)
  if version and string.sub(version, 1, #epoch + 1) == epoch .. '.' then
    return version
  end
  return false
end

if mode == 'lease' then
  local holder, grant = next_arg(), next_arg()
  local out = {}
  for _ = 1, shards do
    local shard = next_shard()
    local applied_epoch, applied_seq = next_arg(), tonumber(next_arg())
    local epoch, seq = settled_state(shard)
    if grant == '' then
      redis.call('HDEL', shard.leases_key, holder)
      epoch, seq = '', 0
    elseif may_grant(redis.call('HGET', shard.leases_key, holder), applied_epoch, applied_seq) then
      redis.call('HSET', shard.leases_key, holder, grant)
    else
      epoch, seq = '', 0
    end
    out[#out + 1] = epoch
    out[#out + 1] = tostring(seq)
  end
  return out
end

if mode == 'ack' then
  local holder = next_arg()
  for _ = 1, shards do
    next_shard()
    local channel, epoch, seq = next_arg(), next_arg(), next_arg()
    redis.call(publish, channel, 'a|' .. epoch .. '|' .. seq .. '|' .. holder)
  end
  return nil
end

if mode == 'prune' then
  for _ = 1, shards do
    local shard = next_shard()
    local field, value, replacement = next_arg(), next_arg(), next_arg()
    if redis.call('HGET', shard.leases_key, field) == value then
      if replacement == '' then
        redis.call('HDEL', shard.leases_key, field)
      else
        redis.call('HSET', shard.leases_key, field, replacement)
      end
    end
  end
  return nil
end

local now = redis.call('TIME')
local now_ms = tostring(now[1] * 1000 + math.floor(now[2] / 1000))
local out = {}

for _ = 1, shards do
  local shard = next_shard()
  local channel = next_arg()
  local n = tonumber(next_arg())
  local version_keys, keys, nonces = {}, {}, {}
  for i = 1, n do
    version_keys[i] = next_key()
    keys[i] = next_arg()
  end
  if mode ~= 'read' then
    for i = 1, n do
      nonces[i] = next_arg()
    end
  end

  if mode == 'read' then
    local epoch, seq = current_state(shard)
    out[#out + 1] = epoch or ''
    out[#out + 1] = tostring(seq or 0)
    for i = 1, n do
      out[#out + 1] = (epoch and version_of(version_keys[i], epoch)) or ''
    end
  else
    local epoch, seq = settled_state(shard)
    local seq_before = seq
    out[#out + 1] = epoch
    local seq_at = #out + 1
    out[seq_at] = ''
    for i = 1, n do
      local version = mode == 'get' and version_of(version_keys[i], epoch)
      if version then
        if ttl_ms > 0 then
          redis.call('PEXPIRE', version_keys[i], ttl_ms)
        end
      else
        seq = seq + 1
        -- The token format, <epoch>.<seq>.<nonce>, is described and parsed by version.rs.
        version = epoch .. '.' .. seq .. '.' .. nonces[i]
        local id = seq .. '-0'
        local added = redis.pcall('XADD', shard.log_key, 'MAXLEN', '~', log_len, id,
          'k', keys[i], 'v', version, 't', now_ms)
        if type(added) == 'table' and added.err then
          -- The log is ahead of the sequence (someone edited Redis by hand): start it afresh.
          redis.call('DEL', shard.log_key)
          redis.call('XADD', shard.log_key, 'MAXLEN', '~', log_len, id,
            'k', keys[i], 'v', version, 't', now_ms)
        end
        if ttl_ms > 0 then
          redis.call('SET', version_keys[i], version, 'PX', ttl_ms)
        else
          redis.call('SET', version_keys[i], version)
        end
        redis.call(publish, channel,
          'i|' .. epoch .. '|' .. seq .. '|' .. now_ms .. '|' .. version .. '|' .. keys[i])
      end
      out[#out + 1] = version
    end
    redis.call('SET', shard.seq_key, seq)
    out[seq_at] = tostring(seq)
    local fields = {}
    if seq > seq_before then
      fields = redis.call('HGETALL', shard.leases_key)
    end
    out[#out + 1] = tostring(#fields / 2)
    for i = 1, #fields do
      out[#out + 1] = fields[i]
    end
  end
end
return out
