-- wrk script for annals-bank: a mix of reads and deposits over the accounts that bench/load/run
-- opened (load-0001 .. load-NNNN, each funded well above what the run can withdraw).
--
--   wrk -s bench/load/mixed.lua URL -- ACCOUNTS RUN_ID
--
-- Per request:   40%  GET /accounts/{id}          (the aggregate's own state)
--                10%  GET /accounts?after=..&limit=..   (balances read model)
--                 5%  GET /health
--                35%  POST /accounts/{id}/deposit  1..10000 cents, unique Idempotency-Key
--                10%  POST /accounts/{id}/withdraw 1 cent, unique Idempotency-Key
-- Every request should answer 2xx: no withdrawal can overdraw, no key repeats.

local accounts = 200
local run_id = "load"
local sent = 0
n_read, n_list, n_health, n_deposit, n_withdraw = 0, 0, 0, 0, 0

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end

function init(args)
  accounts = tonumber(args[1]) or accounts
  run_id = args[2] or run_id
  math.randomseed(os.time() * 100 + thread_no)
end

local function account()
  return string.format("load-%04d", math.random(accounts))
end

local function command(path, cents)
  sent = sent + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = string.format("%s-%d-%d", run_id, thread_no, sent),
  }
  return wrk.format("POST", path, headers, string.format('{"amount":%d}', cents))
end

function request()
  local r = math.random(100)
  if r <= 40 then
    n_read = n_read + 1
    return wrk.format("GET", "/accounts/" .. account())
  elseif r <= 50 then
    n_list = n_list + 1
    return wrk.format("GET", string.format("/accounts?after=%s&limit=%d", account(),
                                           math.random(1, 50)))
  elseif r <= 55 then
    n_health = n_health + 1
    return wrk.format("GET", "/health")
  elseif r <= 90 then
    n_deposit = n_deposit + 1
    return command("/accounts/" .. account() .. "/deposit", math.random(1, 10000))
  else
    n_withdraw = n_withdraw + 1
    return command("/accounts/" .. account() .. "/withdraw", 1)
  end
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local kinds = { read = 0, list = 0, health = 0, deposit = 0, withdraw = 0 }
  for _, t in ipairs(threads) do
    kinds.read = kinds.read + t:get("n_read")
    kinds.list = kinds.list + t:get("n_list")
    kinds.health = kinds.health + t:get("n_health")
    kinds.deposit = kinds.deposit + t:get("n_deposit")
    kinds.withdraw = kinds.withdraw + t:get("n_withdraw")
  end
  local e = summary.errors
  io.write(string.format("load: %d requests in %.1f s: %.0f requests/s\n", summary.requests,
                         seconds, summary.requests / seconds))
  io.write(string.format("load: latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
                         latency:percentile(50) / 1000, latency:percentile(90) / 1000,
                         latency:percentile(99) / 1000, latency.max / 1000))
  io.write(string.format("load: sent %d account reads, %d list reads, %d health checks, "
                         .. "%d deposits, %d withdrawals\n", kinds.read, kinds.list,
                         kinds.health, kinds.deposit, kinds.withdraw))
  io.write(string.format("load: errors: non-2xx %d, connect %d, read %d, write %d, timeout %d\n",
                         e.status, e.connect, e.read, e.write, e.timeout))
end
