-- A real PgBouncer (Debian's) in transaction mode in front of the suite's
-- PostgreSQL, as Neon's "-pooler" hosts are. It listens on another loopback
-- address (not 127.0.0.1) with the SAME port as the server, so that a URL whose
-- host names the pooler differs from the direct one only in its host name,
-- as on Neon. Started per test file (each on a loopback address of its
-- own, 127.X.Y.Z); stop() is safe to call more than once.
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local h = require "harness.env"

local pgbouncer = {}

local BIN = "/usr/sbin/pgbouncer"
local is_root = proc.run({ "id", "-u" }).stdout == "0\n"

local function config_text(dir, addr, port, users)
  return table.concat({
    "[databases]",
    string.format("* = host=127.0.0.1 port=%d", port),
    "[pgbouncer]",
    "listen_addr = " .. addr,
    "listen_port = " .. port,
    "unix_socket_dir =",
    "auth_type = scram-sha-256",
    "auth_file = " .. users,
    "pool_mode = transaction",
    "default_pool_size = 10",
    "max_client_conn = 200",
    "server_reset_query =",
    "logfile = " .. dir .. "/pgbouncer.log",
    "", }, "\n")
end

-- Starts PgBouncer on `addr`; returns its handle, or nil and its log when
-- it could not listen there.
local function try_start(dir, addr, port, users)
  local ini = dir .. "/pgbouncer.ini"
  local log = dir .. "/pgbouncer.log"
  h.write(ini, config_text(dir, addr, port, users))
  if fs.exists(log) then fs.remove(log) end
  -- setpriv --pdeathsig: PgBouncer dies with the test process, even a killed one.
  local argv = { "setpriv", "--pdeathsig", "KILL", BIN, "-q", ini }
  if is_root then
    local r = proc.run({ "chown", "-R", "postgres:postgres", dir })
    if r.code ~= 0 then error("chown for pgbouncer failed: " .. r.stderr, 3) end
    fs.chmod(users, 384)
    argv = { "setpriv", "--pdeathsig", "KILL", "--reuid=postgres", "--regid=postgres", "--init-groups", BIN, "-q",
      ini }
  end
  argv.stdout, argv.stderr = "pipe", "inherit"
  local handle = proc.spawn(argv)
  -- Ready when this PgBouncer says it listens (another one may already
  -- answer on a shared address: test files run side by side).
  local want = string.format("listening on %s:%d", addr, port)
  local deadline = proc.now() + 20
  while proc.now() < deadline and handle:running() do
    local text = fs.exists(log) and h.read(log) or ""
    if text:find(want, 1, true) then return handle, ini, log end
    proc.sleep(0.05)
  end
  local text = fs.exists(log) and h.read(log) or ""
  handle:close()
  return nil, text
end

-- Returns { addr, port, log, ini, stop = function }.
function pgbouncer.start()
  if not fs.exists(BIN) then error("pgbouncer is missing: run 'make deps'", 2) end
  local pg = h.pg()
  local dir = h.tmpdir()
  fs.chmod(dir, 493)
  local port = math.tointeger(pg.port)
  local users = dir .. "/users.txt"
  -- The password is only in this file (never on a command line).
  h.write(users, string.format('"%s" "%s"\n', pg.user, pg.password))
  local handle, ini, log, addr
  for _ = 1, 10 do
    -- a loopback address of its own (all of 127/8 is loopback on Linux)
    addr = string.format("127.%d.%d.%d", math.random(1, 254), math.random(0, 255), math.random(1, 254))
    handle, ini, log = try_start(dir, addr, port, users)
    if handle or not tostring(ini):find("Address already in use", 1, true) then break end
  end
  if not handle then error("pgbouncer did not start: " .. tostring(ini):sub(-1000), 2) end
  local stopped = false
  return {
    addr = addr, port = port, log = log, ini = ini,
    stop = function()
      if stopped then return end
      stopped = true
      handle:kill("TERM")
      handle:wait(10)
      handle:close()
    end,
  }
end

return pgbouncer
