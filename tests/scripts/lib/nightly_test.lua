-- covers: scripts/lib/nightly.lua
-- lib.nightly's run: steps record failures instead of raising, later steps
-- see what they depend on, and Ctrl-C landing anywhere (inside a step or
-- between two) still runs the final part (summary, pings, lock) to its end.
local t = require "harness.testing"
local h = require "harness.env"
local pgvault = require "pgvault"
local nightly = require "lib.nightly"

local function new_run() return nightly.new({ settings = { env = "prod" }, to = "db_backups" }) end

t.test("a failed step is recorded; steps that need it are skipped with the reason; summary line", function()
  local run = new_run()
  run:procedure(function()
    run:step("lock", function() end)
    run:step("backup", function() pgvault.raise("pg", "connection refused") end,
      function(r) return r:blocked("lock") end)
    run:step("prune", function() error("must not run") end, function(r) return r:blocked("backup") end)
  end, function() end)
  t.eq(run.failed.name, "backup")
  t.eq(run.failed.kind, "pg")
  t.eq(run.steps[3].status, "skipped")
  t.eq(run.steps[3].detail, "the backup did not succeed")
  local s = run:summary()
  t.eq(s.ok, false)
  t.match(s.line, "^nightly prod: FAILED in [%d.]+s: backup FAILED; prune skipped %(the backup did not succeed%) "
    .. "%(backup: connection refused%)$")
end)

t.test("Ctrl-C between two steps, while a step's own error left the stop pending: the final part still runs", function()
  local d = h.tmpdir()
  h.write(d .. "/c.lua", [[
    local pgvault = require "pgvault"
    local proc = require "pgvault.proc"
    local run = require("lib.nightly").new({ settings = { env = "prod" }, to = "x" })
    run:procedure(function()
      run:step("backup", function() pgvault.raise("child", "pg_dump failed") end)
      proc.kill(proc.getpid(), "INT")
      local n = 0
      for i = 1, 100 do n = n + i end -- the signal stops the run about here
      run:step("prune", function() end)
      print("not reached", n)
    end, function()
      -- Slow clean-up work still completes after the signal.
      proc.sleep(0.2)
      print("finally", run.interrupted, run.failed.name, run:summary().ok)
    end)
  ]])
  local r = h.pgvault({ "run", d .. "/c.lua" })
  t.eq(r.stdout, "finally\ttrue\tbackup\tfalse\n", "the final part ran: " .. r.stderr)
  t.eq(r.code, 130, "and the exit code says interrupted")
end)

t.test("the lock is refreshed before each step; a lock taken over meanwhile fails the next step", function()
  local run = new_run()
  local refreshed, lost = 0, false
  run.held = { refresh = function()
    if lost then pgvault.raise("exists", "the lock x is no longer held by this run (taken over after it expired?)") end
    refreshed = refreshed + 1
  end }
  run:procedure(function()
    run:step("backup", function() end)
    run:step("read-back", function() lost = true end)
    run:step("prune", function() error("must not run") end)
  end, function() end)
  t.eq(refreshed, 2, "before the backup and before the read-back")
  t.eq(run.failed.name, "prune", "the step after the lock was lost fails")
  t.match(run.failed.error, "no longer held by this run", "saying why")
end)
