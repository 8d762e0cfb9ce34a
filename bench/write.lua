-- wrk script: write a new version of a random one of N KV v2 secrets.
local token = os.getenv("BENCH_TOKEN")
local keys = tonumber(os.getenv("BENCH_KEYS") or "1000")
local mount = os.getenv("BENCH_MOUNT") or "secret"
math.randomseed(os.time() + 1)
local counter = 0
request = function()
  counter = counter + 1
  local path = string.format("/v1/%s/data/bench/key-%d", mount, math.random(0, keys - 1))
  local body = string.format('{"data":{"value":"v-%d-%d","other":"payload-0123456789abcdef"}}', counter, math.random(0, 1000000))
  return wrk.format("POST", path, { ["X-Vault-Token"] = token, ["Content-Type"] = "application/json" }, body)
end
