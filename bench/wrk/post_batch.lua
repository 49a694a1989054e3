-- POST a pre-built batch body (bench/run.py writes it: {"events": [... 1000 ...]}).
-- env: BENCH_KEY, BENCH_BODY_FILE, BENCH_PATH (default /v1/events/batch)
local dir = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
dofile(os.getenv("BENCH_WRK_DIR") and (os.getenv("BENCH_WRK_DIR") .. "/common.lua") or (dir .. "common.lua"))

local req

function init(args)
  local file = os.getenv("BENCH_BODY_FILE")
  assert(file, "BENCH_BODY_FILE not set")
  local f = assert(io.open(file, "rb"))
  local body = f:read("*a")
  f:close()
  req = wrk.format("POST", os.getenv("BENCH_PATH") or "/v1/events/batch", bench_headers(), body)
end

function request()
  return req
end
