-- wrk script for bench/peers: deposits on the accounts bench/peers opened (peer-0000 ..),
-- round-robin, so that the requests in flight go to different accounts.
--
--   wrk -t THREADS -s bench/peers/deposits.lua URL -- ACCOUNTS THREADS TOTAL DONE_FILE
--
-- Thread t (1..THREADS) sends deposits t-1, t-1+THREADS, ... of TOTAL; deposit i goes to
-- account i % ACCOUNTS. Every request is a deposit. A thread that has its share of replies
-- appends a line to DONE_FILE and stops; bench/peers interrupts wrk once every thread has
-- (wrk otherwise sleeps its whole -d). A connection that asks for a request after its
-- thread's share was sent gets one more deposit: wrk's count includes those.

local accounts = 1000
local threads_n = 2
local threads = {}
local next_i = 0
local share = 0
local done_file = nil
sent, replies, failed = 0, 0, 0

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end

function init(args)
  accounts = tonumber(args[1]) or accounts
  threads_n = tonumber(args[2]) or threads_n
  local total = tonumber(args[3]) or accounts * 20
  done_file = args[4]
  share = math.floor((total - thread_no) / threads_n) + 1
  next_i = thread_no - 1
  math.randomseed(thread_no)
end

local headers = { ["Content-Type"] = "application/json" }

function request()
  local k = next_i % accounts
  next_i = next_i + threads_n
  sent = sent + 1
  return wrk.format("POST", string.format("/accounts/peer-%04d/deposit", k), headers,
                    string.format('{"amount":%d}', math.random(1, 100000)))
end

function response(status, headers, body)
  replies = replies + 1
  if status ~= 200 then
    failed = failed + 1
  end
  if replies == share then
    if done_file then
      local f = io.open(done_file, "a")
      f:write(string.format("thread %d done\n", thread_no))
      f:close()
    end
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("failed")
  end
  local e = summary.errors
  io.write(string.format("peers-http: wrk %d requests in %.3f s\n", summary.requests,
                         summary.duration / 1e6))
  io.write(string.format("peers-http: latency p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
                         latency:percentile(50) / 1000, latency:percentile(99) / 1000,
                         latency.max / 1000))
  io.write(string.format("peers-http: non-200 %d\n", bad))
  io.write(string.format("peers-http: errors connect %d, read %d, write %d, timeout %d\n",
                         e.connect, e.read, e.write, e.timeout))
end
