-- Job leases with fencing tokens, and per-period runs (see jobs.rs). Every key shares the job's
-- hash tag, so one call covers them on Redis Cluster too.
-- KEYS[1] lease: hash {holder, token}; its PEXPIRE is the lease
-- KEYS[2] fence: the last fencing token issued for the job (never expires)
-- KEYS[3] runs:  hash {period_ms, period, token, done} of the latest ClaimRun grant
-- ARGV[1] op: acquire | renew | release | claim
local lease, fence, runs = KEYS[1], KEYS[2], KEYS[3]
local op = ARGV[1]

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Strictly larger than every earlier token of this job. It is also at least the Redis clock in
-- microseconds, so tokens keep increasing even when the counter is lost (Redis restarted
-- without persistence), as long as the Redis clock does not go back.
local function next_token(now)
  local last = tonumber(redis.call('GET', fence) or '0') or 0
  local token = string.format('%.0f', math.max(last + 1, now))
  redis.call('SET', fence, token)
  return token
end

local function current()
  local h = redis.call('HMGET', lease, 'holder', 'token')
  return h[1], h[2]
end

local function ttl_left()
  local t = redis.call('PTTL', lease)
  if t < 0 then return 0 end
  return t
end

local function grant(holder, ttl_ms, now)
  local token = next_token(now)
  redis.call('HSET', lease, 'holder', holder, 'token', token)
  redis.call('PEXPIRE', lease, ttl_ms)
  return token
end

if op == 'acquire' then
  -- ARGV[2] holder, ARGV[3] ttl_ms -> {granted, holder, token, ttl_ms}
  local holder, token = current()
  if holder then return {0, holder, token, ttl_left()} end
  return {1, ARGV[2], grant(ARGV[2], ARGV[3], now_us()), tonumber(ARGV[3])}
elseif op == 'renew' then
  -- ARGV[2] token, ARGV[3] ttl_ms -> {renewed, holder, token, ttl_ms}
  local holder, token = current()
  if token ~= ARGV[2] then return {0, holder or '', token or '0', ttl_left()} end
  redis.call('PEXPIRE', lease, ARGV[3])
  return {1, holder, token, tonumber(ARGV[3])}
elseif op == 'release' then
  -- ARGV[2] token -> {released, holder, token, 0}
  local holder, token = current()
  if token ~= ARGV[2] then return {0, holder or '', token or '0', ttl_left()} end
  redis.call('DEL', lease)
  if redis.call('HGET', runs, 'token') == token then
    redis.call('HSET', runs, 'done', '1')
  end
  return {1, holder, token, 0}
elseif op == 'claim' then
  -- ARGV[2] holder, ARGV[3] period_ms, ARGV[4] lease_ms
  -- -> {granted, period, token, holder, lease_ms, next_period_in_ms, refused_because}
  local now = now_us()
  local period_ms = tonumber(ARGV[3])
  local now_ms = math.floor(now / 1000)
  local period = math.floor(now_ms / period_ms)
  local next_in = (period + 1) * period_ms - now_ms
  local p = string.format('%.0f', period)
  local holder, token = current()
  if holder then return {0, p, token, holder, ttl_left(), next_in, 'running'} end
  local run = redis.call('HMGET', runs, 'period_ms', 'period', 'done')
  if run[1] == ARGV[3] then
    local last = tonumber(run[2]) or -1
    if last > period or (last == period and run[3] == '1') then
      return {0, p, '0', '', 0, next_in, 'done'}
    end
  end
  token = grant(ARGV[2], ARGV[4], now)
  redis.call('HSET', runs, 'period_ms', ARGV[3], 'period', p, 'token', token, 'done', '0')
  return {1, p, token, ARGV[2], tonumber(ARGV[4]), next_in, ''}
end
return redis.error_reply('jobs.lua: unknown op ' .. tostring(op))
