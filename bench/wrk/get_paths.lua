-- GET a rotating set of paths (one per line in BENCH_PATHS_FILE, already
-- URL-encoded), e.g. list pages with filters or search queries.
-- env: BENCH_KEY, BENCH_PATHS_FILE
local dir = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
dofile(os.getenv("BENCH_WRK_DIR") and (os.getenv("BENCH_WRK_DIR") .. "/common.lua") or (dir .. "common.lua"))

local reqs = {}
local n = 0
local i = 0

function init(args)
  local headers = bench_headers()
  headers["Content-Type"] = nil
  local file = os.getenv("BENCH_PATHS_FILE")
  assert(file, "BENCH_PATHS_FILE not set")
  for line in io.lines(file) do
    if line ~= "" then reqs[#reqs + 1] = wrk.format("GET", line, headers) end
  end
  n = #reqs
  assert(n > 0, "no paths")
  i = ((thread_id or 1) * 7) % n  -- threads start at different paths
end

function request()
  i = (i % n) + 1
  return reqs[i]
end
