-- A real PgBouncer (Debian's) in transaction mode in front of the suite's
-- PostgreSQL, as Neon's "-pooler" hosts are. It listens on another loopback
-- address (127.0.0.2) with the SAME port as the server, so that a URL whose
-- host names the pooler differs from the direct one only in its host name,
-- as on Neon. Started per test file; stop() is safe to call more than once.
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local h = require "harness.env"

local pgbouncer = {}

local BIN = "/usr/sbin/pgbouncer"
local is_root = proc.run({ "id", "-u" }).stdout == "0\n"

-- Returns { addr, port, stop = function }.
function pgbouncer.start()
  if not fs.exists(BIN) then error("pgbouncer is missing: run 'make deps'", 2) end
  local pg = h.pg()
  local dir = h.tmpdir()
  fs.chmod(dir, 493)
  local addr = "127.0.0.2"
  local port = math.tointeger(pg.port)
  local users = dir .. "/users.txt"
  -- The password is only in this file (never on a command line).
  h.write(users, string.format('"%s" "%s"\n', pg.user, pg.password))
  local ini = dir .. "/pgbouncer.ini"
  h.write(ini, table.concat({
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
    "", }, "\n"))
  -- setpriv --pdeathsig: PgBouncer dies with the test process, even a killed one.
  local argv = { "setpriv", "--pdeathsig", "KILL", BIN, "-q", ini }
  if is_root then
    local r = proc.run({ "chown", "-R", "postgres:postgres", dir })
    if r.code ~= 0 then error("chown for pgbouncer failed: " .. r.stderr, 2) end
    fs.chmod(users, 384)
    argv = { "setpriv", "--pdeathsig", "KILL", "--reuid=postgres", "--regid=postgres", "--init-groups", BIN, "-q",
      ini }
  end
  argv.stdout, argv.stderr = "pipe", "inherit"
  local handle = proc.spawn(argv)
  local deadline = proc.now() + 20
  local ready = false
  while proc.now() < deadline and handle:running() do
    local r = proc.run({ pg.bindir .. "/pg_isready", "-q", "-h", addr, "-p", tostring(port), "-U", pg.user,
      "-d", "postgres" })
    if r.code == 0 then
      ready = true
      break
    end
    proc.sleep(0.05)
  end
  if not ready then
    local log = fs.exists(dir .. "/pgbouncer.log") and h.read(dir .. "/pgbouncer.log") or ""
    handle:close()
    error("pgbouncer did not start: " .. log:sub(-1000), 2)
  end
  local stopped = false
  return {
    addr = addr, port = port, log = dir .. "/pgbouncer.log", ini = ini,
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
