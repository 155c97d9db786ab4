-- Reads or bumps versions of keys of one shard, atomically (design guarantee 6).
--
-- KEYS: epoch, seq, log, then one version key per cache key.
-- ARGV: mode ("get" or "bump"), candidate epoch, channel, replay log length, n,
--       then n cache keys, then n unique nonces.
-- Returns: { epoch, shard sequence after the call, version 1, ..., version n }.
--
-- "get" keeps a key's version when it has one of the current epoch and otherwise issues a new
-- one, exactly as "bump" always does: a missing key or a version from an older epoch means
-- "everything changed", never "version 0". Every issued version gets the next sequence number,
-- a replay-log entry and a published invalidation, in this one call.
local epoch = redis.call('GET', KEYS[1])
local seq = redis.call('GET', KEYS[2])
if not epoch or not seq then
  epoch = ARGV[2]
  seq = 0
  redis.call('SET', KEYS[1], epoch)
  redis.call('DEL', KEYS[3])
else
  seq = tonumber(seq)
end

local mode = ARGV[1]
local channel = ARGV[3]
local log_len = ARGV[4]
local n = tonumber(ARGV[5])
local prefix = epoch .. '.'
local now = redis.call('TIME')
local now_ms = tostring(now[1] * 1000 + math.floor(now[2] / 1000))
local out = { epoch, '' }

for i = 1, n do
  local vkey = KEYS[3 + i]
  local key = ARGV[5 + i]
  local version = false
  if mode == 'get' then
    version = redis.call('GET', vkey)
    if version and string.sub(version, 1, #prefix) ~= prefix then
      version = false
    end
  end
  if not version then
    seq = seq + 1
    version = prefix .. seq .. '.' .. ARGV[5 + n + i]
    local id = seq .. '-0'
    local added = redis.pcall('XADD', KEYS[3], 'MAXLEN', '~', log_len, id,
      'k', key, 'v', version, 't', now_ms)
    if type(added) == 'table' and added.err then
      -- The log is ahead of the sequence (someone edited Redis by hand): start it afresh.
      redis.call('DEL', KEYS[3])
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', log_len, id, 'k', key, 'v', version, 't', now_ms)
    end
    redis.call('SET', vkey, version)
    redis.call('PUBLISH', channel,
      'i|' .. epoch .. '|' .. seq .. '|' .. now_ms .. '|' .. version .. '|' .. key)
  end
  out[2 + i] = version
end

redis.call('SET', KEYS[2], seq)
out[2] = tostring(seq)
return out
