-- Helpers for tests that watch a pgvault process's own children: start
-- pgvault in the background, find a child by program name, and hold a
-- table lock so that pg_dump waits (long enough to look at it or kill it).
local h = require "harness.env"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"

local children = {}

local function ppid_and_comm(pid)
  local ok, stat = pcall(fs.read_file, "/proc/" .. pid .. "/stat")
  if not ok then return nil end
  local comm, rest = stat:match("^%d+ %((.*)%) (.*)$")
  if not comm then return nil end
  return tonumber(rest:match("^%S+ (%d+)")), comm
end

-- The pid of a process named `comm` whose parent is `parent` (and whose
-- command line contains `needle`, when given), waiting up to `timeout`
-- seconds for it to appear.
function children.find(parent, comm, needle, timeout)
  local deadline = proc.now() + (timeout or 20)
  while proc.now() < deadline do
    for _, name in ipairs(fs.listdir("/proc")) do
      local pid = tonumber(name)
      if pid then
        local ppid, c = ppid_and_comm(pid)
        if ppid == parent and c == comm then
          local ok, cmd = pcall(children.cmdline, pid)
          if ok and (not needle or cmd:find(needle, 1, true)) then return pid end
        end
      end
    end
    proc.sleep(0.05)
  end
  return nil
end

function children.cmdline(pid)
  return (fs.read_file("/proc/" .. pid .. "/cmdline"):gsub("%z", " "))
end

function children.environ(pid)
  return (fs.read_file("/proc/" .. pid .. "/environ"):gsub("%z", "\n"))
end

-- Starts pgvault with args in the background; stderr is captured in a file.
function children.pgvault(args, env)
  local d = h.tmpdir()
  local argv = { "sh", "-c", 'exec "$@" >"$PGV_STDOUT" 2>"$PGV_STDERR"', "sh", h.bin }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  argv.env = { PGV_STDOUT = d .. "/stdout", PGV_STDERR = d .. "/stderr" }
  for k, v in pairs(env or {}) do argv.env[k] = v end
  local handle = proc.spawn(argv)
  return handle, function() return h.read(d .. "/stdout"), h.read(d .. "/stderr") end
end

-- Holds an ACCESS EXCLUSIVE lock on `tbl` in database `db` (as superuser,
-- over the socket) until release() is called: pg_dump blocks on it.
function children.lock_table(db, tbl)
  local pg = h.pg()
  local app = "pgv_locker_" .. math.random(1, 1e9)
  local url = pg.admin_url(db) .. "&application_name=" .. app
  local handle = proc.spawn({ pg.bindir .. "/psql", "-X", "-q", "-d", url, "-c",
    "BEGIN; LOCK TABLE " .. tbl .. " IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120);", stdout = "pipe",
    stderr = "pipe" })
  -- Wait until the lock is really held.
  local deadline = proc.now() + 20
  while proc.now() < deadline do
    local out = h.psql(pg.admin_url("postgres"), string.format(
      "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE a.application_name = '%s' "
      .. "AND l.mode = 'AccessExclusiveLock' AND l.granted;", app))
    if tonumber(out) and tonumber(out) > 0 then break end
    proc.sleep(0.05)
  end
  return function()
    h.psql(pg.admin_url("postgres"), string.format(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '%s';", app))
    handle:wait(10)
    handle:close()
  end
end

return children
