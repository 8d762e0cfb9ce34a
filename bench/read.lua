-- wrk script: GET a random one of N KV v2 secrets.
-- Environment: BENCH_TOKEN, BENCH_KEYS (count), BENCH_MOUNT (default "secret").
local token = os.getenv("BENCH_TOKEN")
local keys = tonumber(os.getenv("BENCH_KEYS") or "1000")
local mount = os.getenv("BENCH_MOUNT") or "secret"
math.randomseed(os.time())
request = function()
  local path = string.format("/v1/%s/data/bench/key-%d", mount, math.random(0, keys - 1))
  return wrk.format("GET", path, { ["X-Vault-Token"] = token })
end
