-- wrk script: every request is a new, unique, valid alert (so nothing is a duplicate).
local threads = {}
local n = 0

function setup(thread)
  n = n + 1
  thread:set("tid", n)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  passphrase = os.getenv("BENCH_PASSPHRASE") or "bench-secret"
  run = os.getenv("BENCH_RUN") or "0"  -- distinct per wrk run, so no run repeats another's ids
end

function request()
  counter = counter + 1
  local side = (counter % 2 == 0) and "sell" or "buy"
  local body = string.format(
    '{"passphrase":"%s","ticker":"BTCUSDT","exchange":"BINANCE","interval":"60","action":"%s",' ..
    '"contracts":0.001,"price":30000.5,"id":"bench-%s-%d-%d","comment":"wrk"}',
    passphrase, side, run, tid, counter)
  return wrk.format("POST", "/webhook", {["Content-Type"] = "text/plain"}, body)
end

function done(summary, latency, requests)
  io.write(string.format('RESULT {"requests": %d, "seconds": %.3f, "p50_us": %d, "p99_us": %d, ' ..
    '"non2xx": %d, "errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout))
end
