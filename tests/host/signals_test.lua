-- covers: host/signals.c host/pipeline.c
-- SIGINT/SIGTERM: running Lua stops at a safe point, pipelines abort (no
-- partial file), children are terminated, exit code 130.
local t = require "harness.testing"
local h = require "harness.env"
local proc = require "pgvault.proc"
local fs = require "pgvault.fs"

local function spawn(code)
  return proc.spawn({ h.bin, "-e", code, stdout = "pipe", stderr = "inherit" })
end

t.test("SIGINT stops a busy Lua loop with exit 130", function()
  local p = spawn("io.stdout:write('ready\\n'); io.stdout:flush(); while true do end")
  t.eq(p:read_line(10), "ready")
  p:kill("INT")
  local code = p:wait(10)
  t.eq(code, 130, "exit code")
end)

t.test("SIGTERM does the same", function()
  local p = spawn("io.stdout:write('ready\\n'); io.stdout:flush(); local n = 0; while true do n = n + 1 end")
  t.eq(p:read_line(10), "ready")
  p:kill("TERM")
  t.eq(p:wait(10), 130)
end)

t.test("SIGINT during a pipeline aborts it and leaves no partial file", function()
  local d = h.tmpdir()
  local fifo, out = d .. "/in.fifo", d .. "/out.bin"
  t.eq(proc.run({ "mkfifo", fifo }).code, 0)
  local p = spawn(string.format([[
    local s = require "pgvault.stream"
    io.stdout:write("ready\n"); io.stdout:flush()
    s.run{ s.file_reader(%q), s.sha256(), s.file_writer(%q) }]], fifo, out))
  t.eq(p:read_line(10), "ready")
  local w = assert(io.open(fifo, "w"))
  w:write(string.rep("x", 100000))
  w:flush()
  proc.sleep(0.3)
  local temp = nil
  for _, n in ipairs(fs.listdir(d)) do
    if n:match("^%.out%.bin%.%x+%.partial$") then temp = d .. "/" .. n end
  end
  t.ok(temp, "the pipeline is writing its temporary file")
  p:kill("INT")
  t.eq(p:wait(10), 130, "exit code")
  w:close()
  t.ok(not fs.exists(out), "no output under the final name")
  t.ok(not fs.exists(temp), "no temporary file left")
  t.eq(fs.listdir(d), { "in.fifo" })
end)

t.test("SIGINT terminates a child process and exits 130", function()
  local d = h.tmpdir()
  local pidfile = d .. "/pid"
  local p = spawn(string.format([[
    local proc = require "pgvault.proc"
    io.stdout:write("ready\n"); io.stdout:flush()
    proc.run{ "sh", "-c", "echo $$ > %s; exec sleep 60" }]], pidfile))
  t.eq(p:read_line(10), "ready")
  local deadline = proc.now() + 10
  while not fs.exists(pidfile) and proc.now() < deadline do proc.sleep(0.05) end
  proc.sleep(0.2)
  local child = tonumber(h.read(pidfile))
  t.ok(child, "child pid")
  p:kill("INT")
  t.eq(p:wait(10), 130, "exit code")
  t.ok(not proc.kill(child, "0"), "the child is gone")
end)

t.test("after SIGINT stops a pipeline, its error handler's clean-up runs (uninterrupted), still exit 130", function()
  local d = h.tmpdir()
  local fifo, marker = d .. "/in.fifo", d .. "/cleaned"
  t.eq(proc.run({ "mkfifo", fifo }).code, 0)
  local p = spawn(string.format([[
    local s = require "pgvault.stream"
    local pgvault = require "pgvault"
    local fs = require "pgvault.fs"
    io.stdout:write("ready\n"); io.stdout:flush()
    local ok, err = pcall(s.run, { s.file_reader(%q), s.discard() })
    -- Lua goes on after the delivered error; clean-up runs in spite of the signal
    local n = 0
    for i = 1, 100000 do n = n + i end
    pgvault.uninterrupted(function()
      local c = s.run { s.string("cleaned " .. tostring(pgvault.interrupted())), s.file_writer(%q) }
      return c
    end)
    assert(pgvault.interrupted(), "the interruption stays recorded")
    error(err, 0)]], fifo, marker))
  t.eq(p:read_line(10), "ready")
  local w = assert(io.open(fifo, "w"))
  w:write("some bytes")
  w:flush()
  proc.sleep(0.3)
  p:kill("INT")
  t.eq(p:wait(10), 130, "exit code")
  w:close()
  t.eq(h.read(marker), "cleaned false", "the clean-up pipeline ran, not seeing the old signal")
end)

t.test("a critical section runs to its end through SIGINT (Lua and a child); the run stops right after", function()
  local d = h.tmpdir()
  local marker = d .. "/done"
  local p = spawn(string.format([[
    local pgvault = require "pgvault"
    local proc = require "pgvault.proc"
    local fs = require "pgvault.fs"
    io.stdout:write("ready\n"); io.stdout:flush()
    pgvault.critical(function()
      local t0 = proc.now()
      while proc.now() - t0 < 1.0 do end
      local r = proc.run { "sleep", "0.3" }
      assert(r.code == 0, "the child was not stopped")
      assert(not pgvault.interrupted() and pgvault.signalled())
      fs.write_file(%q, "finished")
    end)
    fs.write_file(%q, "after")]], marker, marker .. ".after"))
  t.eq(p:read_line(10), "ready")
  proc.sleep(0.2)
  p:kill("INT")
  t.eq(p:wait(10), 130, "exit code")
  t.eq(h.read(marker), "finished", "the critical section ran to its end")
  t.ok(not fs.exists(marker .. ".after"), "and the run stopped right after it")
end)
