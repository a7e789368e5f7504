-- covers: bindings/s3.c bindings/s3/reader.c bindings/s3/writer.c bindings/s3/config.c
-- One way to make S3 stages: client:reader{} and client:writer{} use the
-- client that made them (endpoint, keys, CA bundle, retries, the clock
-- offset it learned), and s3.reader{} / s3.writer{} build a client from
-- their table and take the same path. Regression: the stages rebuilt their
-- settings from the options table and the environment, so a client's
-- endpoint was lost and the data went to Amazon.
local t = require "harness.testing"
local h = require "harness.env"
local s3h = require "harness.s3"
local s3proxy = require "harness.s3proxy"
local s3 = require "pgvault.s3"
local stream = require "pgvault.stream"

local PROXY = s3proxy.start()
local BUCKET = s3h.make_bucket("s3-client")

-- A child pgvault whose environment has the keys only: no endpoint, no
-- region, no profile; what it reaches it reaches through its client.
local function run_keys_only(code, args)
  local d = h.tmpdir()
  h.write(d .. "/t.lua", code)
  local c = h.s3()
  local argv = { "run", d .. "/t.lua" }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  return h.pgvault(argv, { env = { AWS_ACCESS_KEY_ID = c.access_key, AWS_SECRET_ACCESS_KEY = c.secret_key,
    AWS_ENDPOINT_URL = false, AWS_REGION = false, AWS_DEFAULT_REGION = false, AWS_PROFILE = false,
    AWS_CONFIG_FILE = "/nonexistent", AWS_SHARED_CREDENTIALS_FILE = "/nonexistent" } })
end

t.test("client:writer{} and client:reader{} send their data to the client's endpoint", function()
  PROXY:reset()
  local r = run_keys_only([[
    local s3 = require "pgvault.s3"
    local stream = require "pgvault.stream"
    local c = s3.client { endpoint_url = arg[1], max_attempts = 2, retry_base_ms = 10 }
    local url = "s3://" .. arg[2] .. "/via-client.txt"
    stream.run { stream.string("through the client's endpoint"), c:writer { url = url } }
    local back = stream.run { c:reader { url = url }, stream.buffer() }
    io.write(back.buffer.data)
  ]], { PROXY.endpoint, BUCKET })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, "through the client's endpoint")
  local ops = PROXY:stats().ops
  t.eq(ops.PutObject, 1, "the writer's PutObject went through the proxy")
  t.eq(ops.GetObject, 1, "the reader's GetObject went through the proxy")
end)

t.test("a stage shares its client's learned clock offset", function()
  PROXY:reset()
  local c <close> = s3.client(PROXY:opts({ clock_skew = -3600 }))
  local url = "s3://" .. BUCKET .. "/skewed.txt"
  t.eq(c:head(url), nil, "the first request learns the server's clock")
  t.eq(PROXY:stats().ops.HeadObject, 2, "one refused as RequestTimeTooSkewed, then answered")
  stream.run { stream.string("on time"), c:writer { url = url } }
  t.eq(PROXY:stats().ops.PutObject, 1, "the writer signed with the corrected clock at once")
  t.eq(stream.run { c:reader { url = url }, stream.buffer() }.buffer.data, "on time")
  t.eq(PROXY:stats().ops.GetObject, 1)
end)

t.test("a stage made from a client outlives the client object", function()
  local url = "s3://" .. BUCKET .. "/outlives.txt"
  local c = s3.client(s3h.direct())
  local w = c:writer { url = url }
  c:close()
  collectgarbage()
  stream.run { stream.string("still here"), w }
  t.eq(s3.get(url, s3h.direct()), "still here")
end)

t.test("settings on a client's stage are refused: they belong to the client", function()
  local c <close> = s3.client(s3h.direct())
  for _, field in ipairs({ "endpoint_url", "profile", "max_attempts", "ca_bundle" }) do
    local o = { url = "s3://" .. BUCKET .. "/x" }
    o[field] = field == "max_attempts" and 3 or "x"
    t.raises(function() c:writer(o) end, "field '" .. field .. "' is a setting of the client", "writer " .. field)
    t.raises(function() c:reader(o) end, "field '" .. field .. "' is a setting of the client", "reader " .. field)
  end
end)

t.test("s3.writer{} and s3.reader{} take their settings from their own table", function()
  PROXY:reset()
  local url = "s3://" .. BUCKET .. "/module.txt"
  stream.run { stream.string("module level"), s3.writer(PROXY:opts({ url = url })) }
  t.eq(stream.run { s3.reader(PROXY:opts({ url = url })), stream.buffer() }.buffer.data, "module level")
  t.eq(PROXY:stats().ops.PutObject, 1)
  t.eq(PROXY:stats().ops.GetObject, 1)
  -- and a bad setting there fails as building a client does
  t.raises(function() s3.reader(s3h.direct({ url = url, endpoint_url = "ftp://x" })) end, "must start with https://")
end)

-- Regression (heap corruption, seen once as glibc's "corrupted double-linked
-- list" in concurrency_test's process): s3.reader{}/s3.writer{} and
-- client:reader{}/client:writer{} dropped the client from the C stack
-- before the stage took its reference to the client's settings. An
-- allocation in between (the stage's userdata) could run a whole GC cycle,
-- finalize the unreachable client, free the settings, and the stage then
-- used freed memory (its keys zeroed: a refused signature; under ASan a
-- heap-use-after-free). A collector that finishes a whole cycle, finalizers
-- included, at every allocation makes that window certain.
t.test("a stage keeps its settings when the collector runs a whole cycle inside its constructor", function()
  local url = "s3://" .. BUCKET .. "/gc-window.txt"
  s3.put(url, "survives the collector", s3h.direct())
  collectgarbage("incremental", 1, 1000, 40)
  collectgarbage() -- (the new pause takes effect from a completed cycle)
  local ok, err = pcall(function()
    for i = 1, 3 do
      local r = s3.reader(s3h.direct({ url = url }))
      local w = s3.client(s3h.direct()):writer { url = url .. "." .. i }
      local c = s3.client(s3h.direct()):reader { url = url }
      t.eq(stream.run { r, stream.buffer() }.buffer.data, "survives the collector", "s3.reader{} " .. i)
      stream.run { stream.string("written " .. i), w }
      t.eq(stream.run { c, stream.buffer() }.buffer.data, "survives the collector", "client:reader{} " .. i)
    end
  end)
  collectgarbage("incremental", 200, 100, 13) -- Lua 5.4's defaults
  if not ok then error(err, 0) end
  for i = 1, 3 do t.eq(s3.get(url .. "." .. i, s3h.direct()), "written " .. i, "client:writer{} " .. i) end
end)
