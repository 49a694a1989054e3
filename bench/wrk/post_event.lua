-- POST one event per request. Each thread pre-builds 1024 distinct requests
-- (action, organization, actor and target vary) in init() and cycles through
-- them, so per-request Lua cost is one table lookup.
-- env: BENCH_KEY (API key; optional for the baseline), BENCH_PATH (default /v1/events)
local dir = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
dofile(os.getenv("BENCH_WRK_DIR") and (os.getenv("BENCH_WRK_DIR") .. "/common.lua") or (dir .. "common.lua"))

local actions = {
  "invoice.paid", "invoice.created", "invoice.voided", "user.login", "user.logout",
  "document.viewed", "document.shared", "member.invited", "settings.updated", "api_key.created",
}
local names = { "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken" }
local reqs = {}
local n = 0
local i = 0

function init(args)
  local path = os.getenv("BENCH_PATH") or "/v1/events"
  local headers = bench_headers()
  local tid = thread_id or 1
  for k = 1, 1024 do
    local u = tid * 100000 + k
    local name = names[(k % #names) + 1]
    local body = string.format(
      '{"action":"%s","organization":"org_%03d",' ..
      '"actor":{"type":"user","id":"user_%d","name":"%s %d","email":"%s.%d@example.com"},' ..
      '"targets":[{"type":"invoice","id":"inv_%d","name":"Invoice %d"}],' ..
      '"metadata":{"amount":%d,"currency":"EUR","plan":"pro"},' ..
      '"ip_address":"203.0.113.%d","user_agent":"bench/1.0"}',
      actions[(k % #actions) + 1], k % 100, u, name, k, string.lower(name), u,
      u, k, (k * 37) % 100000, k % 250)
    reqs[k] = wrk.format("POST", path, headers, body)
  end
  n = #reqs
end

function request()
  i = (i % n) + 1
  return reqs[i]
end
