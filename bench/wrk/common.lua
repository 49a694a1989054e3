-- Shared by every bench script: thread numbering and a machine-readable summary.
-- done() prints ONE line "WRK_RESULT {json}" that bench/run.py parses; wrk's own
-- text output (with --latency) is kept as a fallback.

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
end

function bench_headers()
  local h = { ["Content-Type"] = "application/json" }
  local key = os.getenv("BENCH_KEY")
  if key and key ~= "" then h["Authorization"] = "Bearer " .. key end
  local cookie = os.getenv("BENCH_COOKIE")  -- a console session (bench/console.py)
  if cookie and cookie ~= "" then h["Cookie"] = cookie end
  return h
end

function done(summary, latency, requests)
  local e = summary.errors
  local out = string.format(
    '{"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"stdev":%.1f,' ..
    '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}}',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency.stdev,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9))
  io.write("WRK_RESULT " .. out .. "\n")
end
