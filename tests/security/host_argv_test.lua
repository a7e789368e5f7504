-- covers: host/secrets.c host/main.c scripts/lib/cli.lua
-- Issue 11: pgvault's own command line (/proc/PID/cmdline, readable by every
-- local user) never shows a secret once parsed: a password in --db, and the
-- values of options a workflow declares secret. Regression tests: on the
-- old code the password stayed in /proc/PID/cmdline for the whole backup.
local t = require "harness.testing"
local h = require "harness.env"
local children = require "harness.children"
local proc = require "pgvault.proc"

local DB = "host_argv_security_test"
local url = h.createdb(DB)
t.teardown(function() h.dropdb(DB) end)
h.psql(url, "CREATE TABLE t (a int); INSERT INTO t VALUES (1);")
local PW = h.pg().password

local function has(s, needle) return s:find(needle, 1, true) ~= nil end

-- Starts pgvault with args, waits until `ready` says it is running, returns
-- its command line as other users see it, then lets it finish.
local function cmdline_while_running(args, ready)
  local handle, output = children.pgvault(args)
  local seen = ready(handle, output)
  local cmd = children.cmdline(handle:pid())
  return cmd, seen, handle, output
end

t.test("a password in --db URL or --db=URL is masked in pgvault's cmdline while pg_dump runs", function()
  for _, form in ipairs({ { "--db", url }, { "--db=" .. url }, { "-d", url } }) do
    local d = h.tmpdir()
    local release = children.lock_table(DB, "t")
    local args = { "backup" }
    for _, a in ipairs(form) do args[#args + 1] = a end
    args[#args + 1] = "--to"
    args[#args + 1] = d
    local cmd, dump, handle, output = cmdline_while_running(args, function(hd)
      return children.find(hd:pid(), "pg_dump", "dbname=")
    end)
    release()
    local code = handle:wait(60)
    handle:close()
    local _, stderr = output()
    t.ok(dump, "pg_dump was running: " .. stderr)
    t.eq(code, 0, stderr)
    t.ok(not has(cmd, PW), "no password in " .. cmd)
    t.ok(has(cmd, ":***@127.0.0.1"), "the URL is shown masked: " .. cmd)
    t.ok(has(cmd, "backup") and has(cmd, d), "the rest of the command line stays readable: " .. cmd)
  end
end)

t.test("a conninfo password and an age identity on the command line are masked too", function()
  local code = "io.stdout:write('ready\\n'); io.stdout:flush(); require('pgvault.proc').sleep(20)"
  local p = proc.spawn({ h.bin, "-e", code, "host=x password=conninfo-secret-1",
    "AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQG",
    stdout = "pipe", stderr = "pipe" })
  t.eq(p:read_line(10), "ready")
  local cmd = children.cmdline(p:pid())
  p:kill("TERM")
  p:wait(10)
  p:close()
  t.ok(not has(cmd, "conninfo-secret-1"), cmd)
  t.ok(not has(cmd, "QYQSZQGPQYQSZQGP"), cmd)
  t.ok(has(cmd, "password=***"), cmd)
end)

t.test("options a workflow declares secret (lib.cli secret = true) are masked in every form, and in logs", function()
  local dir = h.tmpdir()
  h.write(dir .. "/tok.lua", [[
-- a workflow with a secret option
local cli = require "lib.cli"
local o = cli.parse(arg, { usage = "pgvault tok [options]",
  options = { { "token", "t", "TOKEN", "an API token", secret = true }, { "name", "n", "NAME", "a name" } } })
log.info("using token %s for %s", o.token, o.name)
io.stdout:write("ready\n"); io.stdout:flush()
require("pgvault.proc").sleep(20)
]])
  for _, form in ipairs({ { "--token", "opaque-token-1234" }, { "--token=opaque-token-1234" },
    { "-topaque-token-1234" }, { "-t", "opaque-token-1234" } }) do
    local args = { "--scripts", dir, "tok", "--name", "visible-name" }
    for _, a in ipairs(form) do args[#args + 1] = a end
    local cmd, ready, handle, output = cmdline_while_running(args, function(_, output)
      local deadline = proc.now() + 10
      while proc.now() < deadline do
        local ok, out = pcall(output) -- the files appear once the process started
        if ok and out:find("ready") then return true end
        proc.sleep(0.05)
      end
    end)
    handle:kill("TERM")
    handle:wait(10)
    handle:close()
    local _, stderr = output()
    t.ok(ready, "the workflow ran: " .. stderr)
    t.ok(not has(cmd, "opaque-token-1234"), table.concat(form, " ") .. ": " .. cmd)
    t.ok(has(cmd, "visible-name"), "other options stay: " .. cmd)
    t.ok(not has(stderr, "opaque-token-1234"), "log line: " .. stderr)
    t.ok(has(stderr, "using token *** for visible-name"), stderr)
  end
end)
