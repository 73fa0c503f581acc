-- The bench's wrk script (bench/wrk.py runs it): POSTs built from a token file, one token a line.
--
-- Arguments after "--", key=value: out (the file done() writes), threads (wrk -t), tokens (the
-- token file), mode (fresh: each request the next unused token, the thread stops when they run
-- out; cycle: round and round; fixed: the first one; none: no token), body (its @TOKEN@ replaced),
-- content_type, bearer (1: "Authorization: Bearer <token>"), expect (the status counted as
-- success; anything but 200 makes wrk hand every response to response(), which counts each
-- status), max (stop after this many requests per thread; wrk itself still exits only at its
-- duration), histogram (1: write every latency value and its count, for medians over runs).

local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

local options = {}
local prepared = {}
local mode = "none"
local limit = nil
sent = 0
exhausted = false
statuses = {}

local function replaced(text, token)
  local first, last = text:find("@TOKEN@", 1, true)
  if first == nil then
    return text
  end
  return text:sub(1, first - 1) .. token .. replaced(text:sub(last + 1), token)
end

local function build(token)
  local headers = { ["Content-Type"] = options.content_type or "application/json" }
  if options.bearer == "1" then
    headers["Authorization"] = "Bearer " .. token
  end
  for name, value in pairs(options) do
    local header = name:match("^header:(.+)$")
    if header then
      headers[header] = value
    end
  end
  return wrk.format("POST", nil, headers, replaced(options.body or "", token))
end

function init(args)
  for _, arg in ipairs(args) do
    local key, value = arg:match("^([^=]+)=(.*)$")
    options[key] = value
  end
  out = options.out
  histogram = options.histogram
  mode = options.mode or "none"
  local count = tonumber(options.threads or "1")
  if options.max then
    limit = math.ceil(tonumber(options.max) / count)
  end
  if mode == "none" then
    prepared[1] = build("")
  else
    local index = 0
    for line in io.lines(options.tokens) do
      -- Each thread takes every count-th token: no two threads send the same fresh token.
      if mode == "fixed" or index % count == thread_index then
        table.insert(prepared, build(line))
        if mode == "fixed" then
          break
        end
      end
      index = index + 1
    end
  end
  if (options.expect or "200") == "200" then
    response = nil
  end
end

function request()
  sent = sent + 1
  if limit ~= nil and sent >= limit then
    wrk.thread:stop()
  end
  local index = sent
  if mode == "fresh" then
    if index >= #prepared then
      exhausted = true
      wrk.thread:stop()
      index = #prepared
    end
  else
    index = (index - 1) % #prepared + 1
  end
  return prepared[index]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local file = io.open(threads[1]:get("out"), "w")
  file:write("requests ", summary.requests, "\n")
  file:write("duration_us ", summary.duration, "\n")
  for name, value in pairs(summary.errors) do
    file:write("error_", name, " ", value, "\n")
  end
  file:write("p50_us ", latency:percentile(50), "\n")
  file:write("p99_us ", latency:percentile(99), "\n")
  for _, thread in ipairs(threads) do
    file:write("sent ", thread:get("sent"), "\n")
    if thread:get("exhausted") then
      file:write("exhausted 1\n")
    end
    for status, count in pairs(thread:get("statuses")) do
      file:write("status ", status, " ", count, "\n")
    end
  end
  if threads[1]:get("histogram") == "1" then
    local index = 1
    while true do
      local value, count = latency(index)
      if value == 0 then
        break
      end
      file:write("latency ", value, " ", count, "\n")
      index = index + 1
    end
  end
  file:close()
end
