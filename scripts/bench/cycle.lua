-- wrk script: a different bearer token on every request, cycling through TOKENS_FILE.
local tokens = {}
for line in io.lines(os.getenv("TOKENS_FILE")) do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", os.getenv("BENCH_PATH") or "/app", { ["Authorization"] = "Bearer " .. tokens[i] })
end
