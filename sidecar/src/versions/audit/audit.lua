-- One reading for the auditor (versions/audit/evidence.rs): everything Redis can tell about
-- whether token T of a key was superseded before a check began, in one atomic call on the keys
-- of the key's shard (one hash slot, so it runs on a Cluster too). Writes nothing.
--
-- KEYS: epoch key, replay log, the key's version key
-- ARGV: key, the token's sequence q, horizon age (ms; entries with t > TIME - age ran after
--       the check began and cannot matter), scan limit (most log entries read)
-- Returns { now_ms, epoch or "", version or "", oldest log seq or "", found seq or "",
--           found t or "", "found" | "none" | "truncated" }
local epoch_key, log_key, version_key = KEYS[1], KEYS[2], KEYS[3]
local key, after, age, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local horizon = now_ms - age
local epoch = redis.call('GET', epoch_key) or ''
local version = redis.call('GET', version_key) or ''
local oldest = redis.call('XRANGE', log_key, '-', '+', 'COUNT', 1)
local oldest_seq = ''
if #oldest > 0 then
  oldest_seq = string.match(oldest[1][1], '^(%d+)')
end

-- The entry's field `name` (fields come as a flat name, value list).
local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then
      return fields[i + 1]
    end
  end
  return nil
end

local from, read = after + 1, 0
while read < limit do
  local batch = math.min(128, limit - read)
  local entries = redis.call('XRANGE', log_key, from .. '-0', '+', 'COUNT', batch)
  for _, entry in ipairs(entries) do
    local seq = tonumber(string.match(entry[1], '^(%d+)'))
    local fields = entry[2]
    local t = tonumber(field(fields, 't') or '0')
    if t > horizon then
      return { tostring(now_ms), epoch, version, oldest_seq, '', '', 'none' }
    end
    if field(fields, 'k') == key then
      return { tostring(now_ms), epoch, version, oldest_seq, tostring(seq), tostring(t), 'found' }
    end
    from = seq + 1
  end
  read = read + #entries
  if #entries < batch then
    return { tostring(now_ms), epoch, version, oldest_seq, '', '', 'none' }
  end
end
return { tostring(now_ms), epoch, version, oldest_seq, '', '', 'truncated' }
