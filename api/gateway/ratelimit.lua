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
--
-- Speed: the script runs on every request. Building strings is what costs most in Redis's Lua (a number
-- turned into a string is formatted with sprintf), so every key suffix is built once per call and every
-- key once per layer, and the windows of a layer are read with one MGET.

local now_s = ARGV[1]
local now = tonumber(now_s)
local cost = tonumber(ARGV[2])
local lease = ARGV[3]
local lease_ttl = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local W = 6  -- values per layer
local MIN = 60000
local win = math.floor(now / MIN)
local into = now - win * MIN
local frac = into / MIN
local day = math.floor(now / 86400000)
local cur_s, prev_s = tostring(win), tostring(win - 1)
local R_CUR, R_PREV = ':r:' .. cur_s, ':r:' .. prev_s
local T_CUR, T_PREV = ':t:' .. cur_s, ':t:' .. prev_s
local DAY = ':d:' .. tostring(day)
local MONTH = ':$:' .. ARGV[6]
local WINDOW_TTL = '121000'     -- 2 minutes + 1 s: the current window outlives its use as the previous one
local DAY_TTL = '172800000'     -- 2 days
local lease_expiry = tostring(now + lease_ttl)
local lease_key_ttl = tostring(lease_ttl + 1000)

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
    local spent = tonumber(redis.call('GET', p .. MONTH) or '0')
    if spent >= budget then
      return {0, i + 1, 'budget', budget, spent, -1}
    end
  end
  -- One read for both windows of requests and tokens (and the day), whichever this layer limits.
  local keys, nk, ir, it, id = {}, 0, 0, 0, 0
  if rpm > 0 then keys[nk + 1], keys[nk + 2], ir, nk = p .. R_CUR, p .. R_PREV, nk + 1, nk + 2 end
  if tpm > 0 then keys[nk + 1], keys[nk + 2], it, nk = p .. T_CUR, p .. T_PREV, nk + 1, nk + 2 end
  if tpd > 0 then keys[nk + 1], id, nk = p .. DAY, nk + 1, nk + 1 end
  local v = (nk > 0) and redis.call('MGET', unpack(keys)) or keys
  if rpm > 0 then
    local cur, prev = tonumber(v[ir] or '0'), tonumber(v[ir + 1] or '0')
    local used = prev * (1 - frac) + cur
    if used + 1 > rpm then
      return {0, i + 1, 'requests', rpm, math.floor(used), wait_ms(rpm, cur, prev, 1)}
    end
    local rem = math.floor(rpm - used - 1)
    if rem_req < 0 or rem < rem_req then rem_req, lim_req, rst_req = rem, rpm, reset_ms(cur + 1, prev) end
  end
  if tpm > 0 then
    local cur, prev = tonumber(v[it] or '0'), tonumber(v[it + 1] or '0')
    local used = prev * (1 - frac) + cur
    if used + cost > tpm then
      return {0, i + 1, 'tokens', tpm, math.floor(used), wait_ms(tpm, cur, prev, cost)}
    end
    local rem = math.floor(tpm - used - cost)
    if rem_tok < 0 or rem < rem_tok then rem_tok, lim_tok, rst_tok = rem, tpm, reset_ms(cur + cost, prev) end
  end
  if tpd > 0 then
    local used = tonumber(v[id] or '0')
    if used + cost > tpd then
      local retry = (cost > tpd) and -1 or ((day + 1) * 86400000 - now)
      return {0, i + 1, 'tokens_per_day', tpd, used, retry}
    end
  end
  if conc > 0 then
    local key = p .. ':c'
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now_s)
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
    local k = p .. R_CUR
    if redis.call('INCR', k) == 1 then redis.call('PEXPIRE', k, WINDOW_TTL) end
  end
  if tpm > 0 and cost > 0 then
    local k = p .. T_CUR
    if redis.call('INCRBY', k, ARGV[2]) == cost then redis.call('PEXPIRE', k, WINDOW_TTL) end
  end
  if tpd > 0 and cost > 0 then
    local k = p .. DAY
    if redis.call('INCRBY', k, ARGV[2]) == cost then redis.call('PEXPIRE', k, DAY_TTL) end
  end
  if conc > 0 then
    local k = p .. ':c'
    redis.call('ZADD', k, lease_expiry, lease)
    redis.call('PEXPIRE', k, lease_key_ttl)
  end
end

return {1, rem_req, lim_req, rst_req, rem_tok, lim_tok, rst_tok}
