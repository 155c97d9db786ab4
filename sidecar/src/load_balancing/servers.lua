-- The server registry and the leader lease of one namespace (see servers.rs). Every key shares
-- the hash tag {<namespace>:servers}. Times are the Redis clock, in milliseconds.
-- KEYS[1] live:   sorted set, member server_id, score = last heartbeat
-- KEYS[2] info:   this server's hash {address, version, role, started, last, incarnation}
-- KEYS[3] leader: '<server_id>|<incarnation>' of the leader lease holder; its PEXPIRE is the
--                 lease. The incarnation is a random token per sidecar process (server ids
--                 cannot contain '|'), so the lease belongs to one process, not to an id that a
--                 second process might share.
-- ARGV[1] op: tick | leave | list
local live, info, leader_key = KEYS[1], KEYS[2], KEYS[3]
local op = ARGV[1]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The server id part of a leader value (a value without '|' is a bare id).
local function holder_id(leader)
  if not leader then
    return ''
  end
  return string.match(leader, '^([^|]*)') or leader
end

if op == 'tick' then
  -- ARGV[2] id, [3] address, [4] version, [5] role, [6] incarnation, [7] ttl_ms, [8] lease_ms,
  -- [9] elect (1 or 0) -> {leading, leader id, live_servers, duplicate}
  local id, incarnation, ttl, lease = ARGV[2], ARGV[6], tonumber(ARGV[7]), ARGV[8]
  local now = now_ms()
  redis.call('ZREMRANGEBYSCORE', live, '-inf', '(' .. string.format('%.0f', now - ttl))
  local owner = redis.call('HMGET', info, 'incarnation', 'last')
  if owner[1] and owner[1] ~= incarnation and tonumber(owner[2] or 0) > now - ttl then
    -- Another process registered this id and is alive: this one neither registers nor
    -- touches the lease, and says so.
    local leader = redis.call('GET', leader_key)
    return {0, holder_id(leader), redis.call('ZCARD', live), 1}
  end
  redis.call('ZADD', live, now, id)
  if owner[1] ~= incarnation then
    redis.call('DEL', info)
    redis.call('HSET', info, 'incarnation', incarnation, 'started', now)
  end
  redis.call('HSET', info, 'address', ARGV[3], 'version', ARGV[4], 'role', ARGV[5], 'last', now)
  redis.call('PEXPIRE', info, ttl * 2)
  local holder = id .. '|' .. incarnation
  local leader = redis.call('GET', leader_key)
  local leading = 0
  if ARGV[9] == '1' then
    if leader == holder then
      -- Compare and extend: only the holding process renews its own lease.
      redis.call('PEXPIRE', leader_key, lease)
      leading = 1
    elseif not leader then
      if redis.call('SET', leader_key, holder, 'NX', 'PX', lease) then
        leader = holder
        leading = 1
      end
    end
  end
  return {leading, holder_id(leader), redis.call('ZCARD', live), 0}
elseif op == 'leave' then
  -- ARGV[2] id, [3] incarnation: this process drops out of the list and gives the lease up if
  -- it holds it; another process's registration or lease under the same id stays.
  if redis.call('GET', leader_key) == ARGV[2] .. '|' .. ARGV[3] then
    redis.call('DEL', leader_key)
  end
  if redis.call('HGET', info, 'incarnation') == ARGV[3] then
    redis.call('ZREM', live, ARGV[2])
    redis.call('DEL', info)
  end
  return 1
elseif op == 'list' then
  -- ARGV[2] ttl_ms, ARGV[3] info key prefix
  -- -> {leader id, id, address, version, started, last, role, id, ...}
  local since = now_ms() - tonumber(ARGV[2])
  local out = {holder_id(redis.call('GET', leader_key))}
  local ids = redis.call('ZRANGEBYSCORE', live, string.format('%.0f', since), '+inf')
  for _, id in ipairs(ids) do
    local h = redis.call('HMGET', ARGV[3] .. id, 'address', 'version', 'started', 'last', 'role')
    table.insert(out, id)
    for i = 1, 5 do
      table.insert(out, h[i] or '')
    end
  end
  return out
end
return redis.error_reply('servers.lua: unknown op ' .. tostring(op))
