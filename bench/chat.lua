-- wrk script for bench/gateway.py: POST one chat completion per request and stop cleanly.
--
-- Plain `wrk -d` cuts the requests in flight when time is up, so the client and the server disagree about how
-- many requests there were. This script instead stops *issuing* requests when time is up (BENCH_SECONDS) or
-- when BENCH_LIMIT requests were issued, waits for every issued request to be answered, then writes
-- BENCH_DONE_FILE; the driver then sends wrk SIGINT (wrk's -d is only a safety cap). While draining, a
-- connection that would send another request sends an unfinished request line instead, which no server
-- answers, so it adds nothing to the latency histogram or the counts. BENCH_DONE_FILE.draining marks the start
-- of the drain, so the driver can give up on requests that will never be answered (a dropped connection).
--
-- Environment: BENCH_PATH, BENCH_MODEL, BENCH_AUTH (bearer token, optional), BENCH_STREAM (1/0),
-- BENCH_MAX_TOKENS, BENCH_SECONDS (0 = no time limit), BENCH_LIMIT (0 = no request limit), BENCH_DONE_FILE.
-- done() prints one JSON line starting with BENCH_RESULT.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]])
local ts = ffi.new("bench_timespec")
local CLOCK_MONOTONIC = 1

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("index", #threads)
end

function init(args)
  local stream = os.getenv("BENCH_STREAM") == "1"
  local body = string.format(
    '{"model":"%s","messages":[{"role":"user","content":"Hello, how are you?"}],"max_tokens":%d%s}',
    os.getenv("BENCH_MODEL") or "llama-3-8b",
    tonumber(os.getenv("BENCH_MAX_TOKENS") or "16"),
    stream and ',"stream":true' or ""
  )
  local headers = { ["Content-Type"] = "application/json" }
  local auth = os.getenv("BENCH_AUTH") or ""
  if auth ~= "" then
    headers["Authorization"] = "Bearer " .. auth
  end
  req = wrk.format("POST", os.getenv("BENCH_PATH") or "/v1/chat/completions", headers, body)
  hold = "GET /bench-drain HTTP/1.1\r\nHost: 127.0.0.1\r\n" -- no blank line: never answered
  seconds = tonumber(os.getenv("BENCH_SECONDS") or "0")
  limit = tonumber(os.getenv("BENCH_LIMIT") or "0")
  done_file = os.getenv("BENCH_DONE_FILE") or ""
  issued, answered, ok, non2xx, held = 0, 0, 0, 0, 0
  statuses = {} -- non-2xx status -> count
  error_sample = "" -- the first non-2xx body, for the report
  first_sent, last_answer = 0, 0
  draining, finished = false, false
  -- wrk calls request() once on the first thread's state, right after init(), to check the script; that
  -- request is never sent, so it must not be counted.
  verifying = index == 1
end

local function touch(path)
  if done_file ~= "" then
    local f = io.open(path, "w")
    if f then
      f:close()
    end
  end
end

local function finish()
  if finished then
    return
  end
  finished = true
  touch(done_file)
  wrk.thread:stop()
end

function request()
  if verifying then
    verifying = false
    return req
  end
  if not draining then
    local t = now()
    if first_sent == 0 then
      first_sent = t
    end
    if (limit > 0 and issued >= limit) or (seconds > 0 and t - first_sent >= seconds) then
      draining = true
      touch(done_file .. ".draining")
    end
  end
  if draining then
    held = held + 1
    if answered >= issued then
      finish()
    end
    return hold
  end
  issued = issued + 1
  return req
end

function response(status, headers, body)
  answered = answered + 1
  last_answer = now()
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    non2xx = non2xx + 1
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
    if error_sample == "" then
      error_sample = key .. " " .. string.sub(body or "", 1, 300)
    end
  end
  if draining and answered >= issued then
    finish()
  end
end

local function json_string(s)
  local escaped = s:gsub('[%c"\\]', function(c)
    if c == '"' then
      return '\\"'
    elseif c == "\\" then
      return "\\\\"
    end
    return string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. escaped .. '"'
end

function done(summary, latency, requests)
  local issued_, answered_, ok_, non2xx_, held_ = 0, 0, 0, 0, 0
  local t0, t1 = math.huge, 0
  local statuses_, sample_ = {}, ""
  for _, t in ipairs(threads) do
    issued_ = issued_ + t:get("issued")
    answered_ = answered_ + t:get("answered")
    ok_ = ok_ + t:get("ok")
    non2xx_ = non2xx_ + t:get("non2xx")
    held_ = held_ + t:get("held")
    for k, v in pairs(t:get("statuses")) do
      statuses_[k] = (statuses_[k] or 0) + v
    end
    if sample_ == "" then
      sample_ = t:get("error_sample")
    end
    local f, l = t:get("first_sent"), t:get("last_answer")
    if f > 0 and f < t0 then
      t0 = f
    end
    if l > t1 then
      t1 = l
    end
  end
  local elapsed = (t1 > t0) and (t1 - t0) or 0
  local e = summary.errors
  local parts = {}
  for k, v in pairs(statuses_) do
    table.insert(parts, string.format('"%s":%d', k, v))
  end
  io.write(
    string.format(
      'BENCH_RESULT {"issued":%d,"answered":%d,"ok":%d,"non2xx":%d,"held":%d,"elapsed_s":%.6f,'
        .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d,'
        .. '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"wrk_duration_us":%d,'
        .. '"statuses":{%s},"error_sample":%s}\n',
      issued_,
      answered_,
      ok_,
      non2xx_,
      held_,
      elapsed,
      latency:percentile(50),
      latency:percentile(90),
      latency:percentile(99),
      latency.mean,
      latency.max,
      e.connect,
      e.read,
      e.write,
      summary.duration,
      table.concat(parts, ","),
      json_string(sample_)
    )
  )
end
