-- covers: bindings/stream/progress.c
-- stream.progress: passes bytes unchanged, reports what it counted, is
-- silent when stderr is not a terminal and draws on one (under script(1)).
local t = require "harness.testing"
local h = require "harness.env"
local stream = require "pgvault.stream"

t.test("a tap that counts and passes bytes unchanged", function()
  local data = string.rep("abc", 100000)
  local r = stream.run { stream.string(data), stream.progress { label = "meter", tty = false }, stream.buffer() }
  t.eq(r.buffer.data == data, true)
  t.eq(r.meter.bytes, #data)
  t.eq(r.meter.drawn, false)
  t.ok(r.meter.seconds >= 0)
end)

t.test("silent when stderr is not a terminal", function()
  local r = h.pgvault({ "-e", [[local s = require "pgvault.stream"
    s.run { s.string(string.rep("x", 1 << 20)), s.progress { label = "copy" }, s.discard() }]] })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stderr, "", "nothing on a pipe")
end)

t.test("draws bytes, rate and elapsed time on a terminal, a few times a second at most", function()
  local d = h.tmpdir()
  h.write(d .. "/meter.lua", [[local s = require "pgvault.stream"
    local src = s.string(string.rep("y", 3 << 20))
    s.run { src, s.progress { label = "copying" }, s.discard() }]])
  -- script(1) gives the child a pseudo-terminal; its output is the terminal's.
  local r = h.run({ "script", "-qec", h.bin .. " run " .. d .. "/meter.lua", "/dev/null" })
  t.eq(r.code, 0, r.stdout)
  t.match(r.stdout, "copying  3%.0 MiB  [%d.]+ [KMGT]?i?B/s  0:00:0%d\r?\n", "final line")
  local draws = select(2, r.stdout:gsub("\r", "\r"))
  t.ok(draws <= 8, "redrawn at most a few times (" .. draws .. ")")
end)
