-- wrk script: a credential-stuffing flood, POST auth/user/login with wrong
-- passwords for BENCH_LOGIN_EMAIL (default victim@example.com); with
-- BENCH_LOGIN_SPRAY=1 each request names a different (unknown) account.
local email = os.getenv("BENCH_LOGIN_EMAIL") or "victim@example.com"
local spray = os.getenv("BENCH_LOGIN_SPRAY") == "1"
local n = 0
request = function()
  n = n + 1
  local who = email
  if spray then
    who = string.format("user-%d-%d@example.com", math.random(0, 1000000), n)
  end
  local body = string.format('{"email":"%s","password":"wrong-password-%d"}', who, n)
  return wrk.format("POST", "/v1/auth/user/login", { ["Content-Type"] = "application/json" }, body)
end
