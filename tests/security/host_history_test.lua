-- covers: host/repl.c host/redact.c
-- Issue 11: the REPL's history file never stores a line holding a secret
-- (a URL's password, an age identity, a token, anything the redactor
-- masks), and lines an older pgvault stored are purged. Regression test:
-- the old code stored every line.
local t = require "harness.testing"
local h = require "harness.env"
local tty = require "harness.tty"
local fs = require "pgvault.fs"

local SECRET_LINES = {
  [[u = "postgresql://app:hunter2-pw@db/app"]],
  [[k = "AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQG"]],
  [[c = "host=db password=conninfo-pw"]],
  [[hdr = "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.x.y"]],
}

t.test("lines holding secrets never reach the history file; older ones are purged", function()
  local home = h.tmpdir()
  local hist = home .. "/hist"
  h.write(hist, "print('kept from before')\nold = 'postgresql://x:older-secret@db/x'\n")
  local s = tty.start(string.format("env HOME=%s PGVAULT_HISTORY=%s TERM=xterm %s", home, hist, h.bin))
  t.ok(s.wait_for("pgvault>"), "prompt")
  for _, line in ipairs(SECRET_LINES) do s.type_line(line) end
  s.type_line("plain = 40 + 2")
  s.type_line("plain")
  t.ok(s.wait_for("\n42"), "the REPL ran the lines")
  s.tmux("send-keys", "-t", "t", "C-d")
  local code = s.wait_exit(20)
  s.close()
  t.eq(code, 0, "the REPL left on Ctrl-D")
  local text = h.read(hist)
  t.match(text, "plain = 40 %+ 2", "ordinary lines are kept")
  t.match(text, "kept from before", "older ordinary lines are kept")
  for _, needle in ipairs({ "hunter2-pw", "QYQSZQGP", "conninfo-pw", "eyJhbGci", "older-secret" }) do
    t.ok(not text:find(needle, 1, true), needle .. " in the history file:\n" .. text)
  end
  t.eq(fs.stat(hist).mode, 384, "the history file is private (0600)")
end)
