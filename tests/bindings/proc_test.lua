-- covers: bindings/proc.c host/child.c
-- pgvault.proc: running children with captured output, env and stdin.
local t = require "harness.testing"
local proc = require "pgvault.proc"

t.test("run captures stdout, stderr and the exit code", function()
  local r = proc.run { "sh", "-c", "echo out; echo err >&2; exit 7" }
  t.eq(r.code, 7)
  t.eq(r.stdout, "out\n")
  t.eq(r.stderr, "err\n")
end)

t.test("run feeds stdin, large in both directions", function()
  local big = string.rep("abcdefgh", 200000) -- 1.6 MB both ways: no pipe deadlock
  local r = proc.run { "cat", stdin = big }
  t.eq(r.code, 0)
  t.eq(#r.stdout, #big)
  t.ok(r.stdout == big, "same bytes")
end)

t.test("env adds, overrides and removes variables", function()
  local r = proc.run { "sh", "-c", 'echo "${A-unset} ${HOME-unset}"', env = { A = "set", HOME = false } }
  t.eq(r.stdout, "set unset\n")
end)

t.test("a missing program is an error naming it", function()
  local e = t.raises(function() proc.run { "/nonexistent/prog" } end, "cannot run /nonexistent/prog")
  t.eq(e.kind, "child")
end)

t.test("a timeout kills the child", function()
  local t0 = proc.now()
  local r = proc.run { "sleep", "30", timeout = 1 }
  t.eq(r.timed_out, true)
  t.ok(proc.now() - t0 < 10, "returned promptly")
  t.eq(r.signal, 15)
end)

t.test("spawn, read_line, wait, kill", function()
  local p = proc.spawn { "sh", "-c", "echo one; echo two; exec sleep 30" }
  t.eq(p:read_line(5), "one")
  t.eq(p:read_line(5), "two")
  t.ok(p:running())
  p:kill("TERM")
  local code, sig = p:wait(5)
  t.eq(code, 143)
  t.eq(sig, 15)
  t.match(tostring(p), "pid")
  p:close()
  t.match(tostring(p), "closed")
end)

t.test("cwd is honoured", function()
  t.eq(proc.run({ "pwd", cwd = "/tmp" }).stdout, "/tmp\n")
end)
