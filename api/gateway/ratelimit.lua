-- Admission for every layer (global, org, environment, key) in one round trip.
-- Requests and tokens per minute: sliding window approximated from two fixed one-minute windows
--   used = previous * (1 - elapsed fraction) + current
-- Tokens per day: the UTC day. Concurrency: a sorted set of leases scored by their expiry, so a lease
-- whose holder died simply ages out.
-- Nothing is charged unless every layer admits.
--
-- Monthly spend caps: a counter of pico-dollars per layer and calendar month, charged at settlement.
--
-- ARGV: now_ms, cost, lease_id, lease_ttl_ms, n_layers, month, then per layer:
--       prefix, rpm, tpm, tpd, conc, budget_pico (0 = none)
-- Returns {0, layer, kind, limit, used, retry_ms} on refusal,
--         {1, rem_req, lim_req, reset_req_ms, rem_tok, lim_tok, reset_tok_ms} on admission (-1: no limit).

local now = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local lease = ARGV[3]
local lease_ttl = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local month = ARGV[6]
local W = 6  -- values per layer
local MIN = 60000
local win = math.floor(now / MIN)
local into = now - win * MIN
local frac = into / MIN
local day = math.floor(now / 86400000)

local function window_used(prefix, kind)
  local v = redis.call('MGET', prefix .. ':' .. kind .. ':' .. win, prefix .. ':' .. kind .. ':' .. (win - 1))
  local cur, prev = tonumber(v[1] or '0'), tonumber(v[2] or '0')
  return prev * (1 - frac) + cur, cur, prev
end

-- How long until `need` more fits under `limit`, given the two windows.
local function wait_ms(limit, cur, prev, need)
  if cur + need <= limit then
    if prev <= 0 then return 0 end
    local f = 1 - (limit - need - cur) / prev
    return math.max(0, math.ceil((f - frac) * MIN))
  end
  if need > limit then return -1 end
  local f2 = 1 - (limit - need) / cur
  return math.ceil((MIN - into) + math.max(0, f2) * MIN)
end

local function reset_ms(cur, prev)
  if cur > 0 then return (MIN - into) + MIN end
  if prev > 0 then return MIN - into end
  return 0
end

local rem_req, lim_req, rst_req = -1, -1, 0
local rem_tok, lim_tok, rst_tok = -1, -1, 0

for i = 0, n - 1 do
  local b = 7 + i * W
  local p = ARGV[b]
  local rpm, tpm, tpd, conc = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local budget = tonumber(ARGV[b + 5])
  if budget > 0 then
    local spent = tonumber(redis.call('GET', p .. ':$:' .. month) or '0')
    if spent >= budget then
      return {0, i + 1, 'budget', budget, spent, -1}
    end
  end
  if rpm > 0 then
    local used, cur, prev = window_used(p, 'r')
    if used + 1 > rpm then
      return {0, i + 1, 'requests', rpm, math.floor(used), wait_ms(rpm, cur, prev, 1)}
    end
    local rem = math.floor(rpm - used - 1)
    if rem_req < 0 or rem < rem_req then rem_req, lim_req, rst_req = rem, rpm, reset_ms(cur + 1, prev) end
  end
  if tpm > 0 then
    local used, cur, prev = window_used(p, 't')
    if used + cost > tpm then
      return {0, i + 1, 'tokens', tpm, math.floor(used), wait_ms(tpm, cur, prev, cost)}
    end
    local rem = math.floor(tpm - used - cost)
    if rem_tok < 0 or rem < rem_tok then rem_tok, lim_tok, rst_tok = rem, tpm, reset_ms(cur + cost, prev) end
  end
  if tpd > 0 then
    local used = tonumber(redis.call('GET', p .. ':d:' .. day) or '0')
    if used + cost > tpd then
      local retry = (cost > tpd) and -1 or ((day + 1) * 86400000 - now)
      return {0, i + 1, 'tokens_per_day', tpd, used, retry}
    end
  end
  if conc > 0 then
    local key = p .. ':c'
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local busy = redis.call('ZCARD', key)
    if busy >= conc then
      return {0, i + 1, 'concurrency', conc, busy, 1000}
    end
  end
end

for i = 0, n - 1 do
  local b = 7 + i * W
  local p = ARGV[b]
  local rpm, tpm, tpd, conc = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  if rpm > 0 then
    local k = p .. ':r:' .. win
    if redis.call('INCR', k) == 1 then redis.call('PEXPIRE', k, 2 * MIN + 1000) end
  end
  if tpm > 0 and cost > 0 then
    local k = p .. ':t:' .. win
    if redis.call('INCRBY', k, cost) == cost then redis.call('PEXPIRE', k, 2 * MIN + 1000) end
  end
  if tpd > 0 and cost > 0 then
    local k = p .. ':d:' .. day
    if redis.call('INCRBY', k, cost) == cost then redis.call('PEXPIRE', k, 2 * 86400000) end
  end
  if conc > 0 then
    local k = p .. ':c'
    redis.call('ZADD', k, now + lease_ttl, lease)
    redis.call('PEXPIRE', k, lease_ttl + 1000)
  end
end

return {1, rem_req, lim_req, rst_req, rem_tok, lim_tok, rst_tok}
