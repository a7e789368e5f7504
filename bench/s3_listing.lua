-- Listings at scale (issue 17): `restore …/latest` resolution with 10,000
-- backups in the prefix and `list` of 1,000, against `aws s3 ls` of the same
-- prefix, with 30 ms added to every request by the fault proxy (a distant
-- server such as B2). Targets: latest <= 1.5x, list <= 2x.
-- `bin/pgvault run bench/s3_listing.lua` (PGVAULT_BENCH_LATEST_N, default
-- 10000; PGVAULT_BENCH_LIST_N, default 1000; PGVAULT_BENCH_DELAY_MS, 30;
-- PGVAULT_BENCH_ROUNDS, best of 3).
package.path = "bench/?.lua;" .. package.path
local bench = require "lib.bench"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local s3 = require "pgvault.s3"
local manifest = require "lib.manifest"
local naming = require "lib.naming"

local latest_n = tonumber(os.getenv("PGVAULT_BENCH_LATEST_N") or "10000")
local list_n = tonumber(os.getenv("PGVAULT_BENCH_LIST_N") or "1000")
local delay = tonumber(os.getenv("PGVAULT_BENCH_DELAY_MS") or "30")
local rounds = tonumber(os.getenv("PGVAULT_BENCH_ROUNDS") or "3")

local desc, work, stop = bench.services()
local proxy
local ok, err = pcall(function()
  local d = desc.s3
  local direct = { endpoint_url = d.endpoint, region = d.region, access_key_id = d.access_key,
    secret_access_key = d.secret_key }
  local client = s3.client(direct)
  client:create_bucket("s3://bench")

  -- n backups (a tiny archive and its manifest each), one per hour
  local function populate(prefix, n)
    local t0 = os.time() - n * 3600
    for i = 1, n do
      local name = naming.archive_name(naming.stamp(t0 + i * 3600), "prod", ".zst")
      local url = "s3://bench/" .. prefix .. name
      client:put(url, "archive " .. i)
      client:put(naming.manifest_path(url), manifest.encode(manifest.new { environment = "prod",
        database = "shop", stored = { name = name, bytes = #("archive " .. i), sha256 = string.rep("0", 64) } }))
    end
  end
  io.write(string.format("populating %d + %d backups ... ", latest_n, list_n))
  io.flush()
  local t0 = proc.now()
  populate("latest/", latest_n)
  populate("list/", list_n)
  print(string.format("%.0fs", proc.now() - t0))

  -- the proxy, every request delayed
  proxy = proc.spawn({ "node", bench.root .. "/tests/harness/s3proxy.js", d.endpoint, stdout = "pipe",
    stderr = "inherit" })
  local port = assert((proxy:read_line(30) or ""):match("^ready (%d+)"), "the proxy did not start")
  local endpoint = "http://127.0.0.1:" .. port
  bench.must(bench.measure({ "curl", "-sS", "--fail", "-X", "POST", "--data-binary",
    string.format('{"ms": %d}', delay), endpoint .. "/__proxy/delay" }), "setting the delay")
  local env = { AWS_ACCESS_KEY_ID = d.access_key, AWS_SECRET_ACCESS_KEY = d.secret_key, AWS_REGION = d.region,
    AWS_DEFAULT_REGION = d.region, AWS_ENDPOINT_URL = endpoint, AWS_PROFILE = false,
    AWS_CONFIG_FILE = "/nonexistent", AWS_SHARED_CREDENTIALS_FILE = "/nonexistent" }
  local script = work .. "/latest.lua"
  fs.write_file(script, 'print(require("lib.s3backups").resolve(arg[1], {}))\n')

  local function best(argv)
    local top
    for _ = 1, rounds do
      local r = bench.must(bench.measure(argv, { env = env }), argv[2])
      if not top or r.seconds < top.seconds then top = r end
    end
    return top
  end
  local function aws_ls(prefix)
    return best({ "/usr/bin/aws", "--endpoint-url", endpoint, "--region", d.region, "s3", "ls",
      "s3://bench/" .. prefix })
  end
  print(string.format("listings with %d ms per request (best of %d; shared machine)", delay, rounds))
  local r1 = bench.row(string.format("latest of %d", latest_n),
    best({ bench.bin, "run", script, "s3://bench/latest/latest" }), aws_ls("latest/"))
  local r2 = bench.row(string.format("list of %d", list_n),
    best({ bench.bin, "list", "--from", "s3://bench/list/" }), aws_ls("list/"))
  print(string.format("targets: latest <= 1.5x (%s), list <= 2x (%s)", r1 <= 1.5 and "met" or "NOT met",
    r2 <= 2 and "met" or "NOT met"))
end)
if proxy then proxy:close() end
stop()
if not ok then error(err, 0) end
