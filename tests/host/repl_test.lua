-- covers: host/repl.c
-- The REPL as a person uses it, in a real pseudo-terminal under tmux:
-- expressions print, multi-line input, completion, Ctrl-C, history, Ctrl-D.
local t = require "harness.testing"
local h = require "harness.env"
local proc = require "pgvault.proc"

local tmux_socket
local function tmux(...)
  local argv = { "tmux", "-S", tmux_socket, ... }
  return h.run(argv, { timeout = 20 })
end

local function screen()
  return tmux("capture-pane", "-p", "-t", "repl").stdout
end

-- Waits until the screen matches pattern (plain find), or fails.
local function wait_for(pattern, what)
  local deadline = proc.now() + 15
  local s
  repeat
    s = screen()
    if s:find(pattern, 1, true) then return s end
    proc.sleep(0.1)
  until proc.now() > deadline
  t.ok(false, (what or "screen") .. ": waited for " .. string.format("%q", pattern) .. ", screen:\n" .. s)
end

local function start(home)
  tmux("kill-server")
  local env = string.format("env HOME=%s PGVAULT_HISTORY=%s/hist TERM=xterm", home, home)
  local r = tmux("new-session", "-d", "-s", "repl", "-x", "150", "-y", "50", env .. " " .. h.bin)
  t.eq(r.code, 0, "tmux started: " .. r.stderr)
  wait_for("pgvault>", "prompt")
end

local function type_line(text)
  tmux("send-keys", "-t", "repl", "-l", text)
  tmux("send-keys", "-t", "repl", "Enter")
end

local function with_repl(fn)
  local home = h.tmpdir()
  tmux_socket = home .. "/tmux.sock"
  local ok, err = pcall(fn, home)
  -- leave as a user does (Ctrl-D), so the shell ends normally, then the server
  tmux("send-keys", "-t", "repl", "C-u", "C-d")
  local deadline = proc.now() + 5
  while tmux("has-session", "-t", "repl").code == 0 and proc.now() < deadline do proc.sleep(0.1) end
  tmux("kill-server")
  if not ok then error(err, 0) end
end

t.test("expressions, tables and multi-line chunks", function()
  with_repl(function(home)
    start(home)
    type_line("6*7")
    wait_for("\n42", "expression result")
    type_line("{a=1, b={c='x'}}")
    wait_for('{ a = 1, b = { c = "x" } }', "table printed readably")
    type_line("function twice(n)")
    wait_for("..>", "continuation prompt")
    type_line("  return n * 2")
    type_line("end")
    type_line("twice(21)")
    wait_for("\n42\npgvault>", "multi-line function")
    type_line("error('oops')")
    wait_for("pgvault: repl: stdin:1: oops", "errors reported, REPL continues")
  end)
end)

t.test("modules are preloaded and tab completion walks tables", function()
  with_repl(function(home)
    start(home)
    tmux("send-keys", "-t", "repl", "-l", "pgvault.str")
    tmux("send-keys", "-t", "repl", "Tab")
    wait_for("pgvault> pgvault.stream", "completed module name")
    tmux("send-keys", "-t", "repl", "-l", ".sha")
    tmux("send-keys", "-t", "repl", "Tab")
    wait_for("pgvault.stream.sha256", "completed field")
    tmux("send-keys", "-t", "repl", "-l", "~= nil")
    tmux("send-keys", "-t", "repl", "Enter")
    wait_for("\ntrue", "the completed expression runs")
  end)
end)

t.test("Ctrl-C cancels the line, interrupts a command, and the REPL goes on", function()
  with_repl(function(home)
    start(home)
    tmux("send-keys", "-t", "repl", "-l", "this is half a line")
    tmux("send-keys", "-t", "repl", "C-c")
    wait_for("^C", "line cancelled")
    type_line("while true do end")
    proc.sleep(0.5)
    tmux("send-keys", "-t", "repl", "C-c")
    wait_for("pgvault: repl: interrupted", "command interrupted")
    type_line("'still here'")
    wait_for("\nstill here", "REPL alive after Ctrl-C")
  end)
end)

t.test("history persists across sessions; Ctrl-D leaves", function()
  with_repl(function(home)
    start(home)
    type_line("1 + 1000")
    wait_for("1001")
    tmux("send-keys", "-t", "repl", "C-d")
    local deadline = proc.now() + 10
    while tmux("has-session", "-t", "repl").code == 0 and proc.now() < deadline do proc.sleep(0.1) end
    t.ok(tmux("has-session", "-t", "repl").code ~= 0, "Ctrl-D ended the session")
    t.match(h.read(home .. "/hist"), "1 %+ 1000", "history file")
    start(home)
    tmux("send-keys", "-t", "repl", "Up")
    wait_for("pgvault> 1 + 1000", "history recalled with Up")
  end)
end)
