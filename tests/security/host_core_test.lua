-- covers: host/secrets.c host/main.c
-- Issue 11: core dumps are off while secrets are in memory: RLIMIT_CORE 0
-- and not dumpable (no core file, no ptrace or /proc/PID/mem for others),
-- unless PGVAULT_CORE_DUMPS=1 asks for them. Regression test: the old code
-- left both as the environment set them.
local t = require "harness.testing"
local h = require "harness.env"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"

-- Runs pgvault as user nobody with its soft core limit raised to the hard
-- one; returns its core limit line from /proc/PID/limits and the owner of
-- /proc/PID/status (root when the process is not dumpable).
local function observe(env)
  local code = "io.stdout:write('ready\\n'); io.stdout:flush(); proc.sleep(20)"
  local argv = { "sh", "-c", 'ulimit -S -c "$(ulimit -H -c)" && exec "$@"', "sh", "setpriv", "--reuid=65534",
    "--regid=65534", "--clear-groups", h.bin, "-e", code, stdout = "pipe", stderr = "pipe", env = env }
  local p = proc.spawn(argv)
  local line = p:read_line(10)
  local pid = p:pid()
  local limits = fs.read_file("/proc/" .. pid .. "/limits"):match("Max core file size[^\n]*")
  local owner = fs.stat("/proc/" .. pid .. "/status").uid
  local status = fs.read_file("/proc/" .. pid .. "/status")
  p:kill("TERM")
  p:wait(10)
  p:close()
  t.eq(line, "ready", "pgvault ran as nobody")
  t.match(status, "\nUid:%s+65534", "running as nobody")
  return limits, owner
end

local hard = h.run({ "sh", "-c", "ulimit -H -c" }).stdout:match("%S+")

t.test("core dumps are off: core size 0 and not dumpable", function()
  t.ok(hard ~= "0", "this machine allows core dumps at all (hard limit " .. tostring(hard) .. ")")
  local limits, owner = observe()
  t.match(limits, "^Max core file size%s+0%s", "RLIMIT_CORE")
  t.eq(owner, 0, "/proc/PID/status belongs to root: the process is not dumpable")
end)

t.test("PGVAULT_CORE_DUMPS=1 leaves them on, for debugging", function()
  -- (AddressSanitizer turns core dumps off on its own unless told not to)
  local asan = (os.getenv("ASAN_OPTIONS") or "") .. ":disable_coredump=0"
  local limits, owner = observe({ PGVAULT_CORE_DUMPS = "1", ASAN_OPTIONS = asan })
  t.ok(not limits:match("^Max core file size%s+0%s"), "RLIMIT_CORE left as it was: " .. limits)
  t.eq(owner, 65534, "dumpable")
end)
