-- covers: scripts/neon_restore.lua scripts/lib/neon.lua scripts/lib/fly.lua
-- neon-restore's secrets (issue 11's class, in issue 16's workflow): the Neon
-- API key, the Fly token and the database password never reach a log line
-- (even with -v), an error, the state file, a command line or the
-- environment of the pg_restore it runs; a token the API refuses is not
-- echoed back.
local fs = require "pgvault.fs"
local h = require "harness.env"
local saas = require "harness.saas"
local t = require "harness.testing"

local env = saas.start{}
local pg = env.pg

local function app_db()
  local s = env:app_database("sec_shop")
  return s.dir, s.src
end

local function no_secret(text, what)
  t.no_match(text, pg.password, what .. ": database password")
  t.no_match(text, env.neon_key, what .. ": Neon API key")
  t.no_match(text, "lJPECAAAAAAAfaketokenpart", what .. ": Fly token")
end

t.test("a verbose run, its state file and its summary hold no secret", function()
  local dir, src = app_db()
  local r = env:pgvault({ "-v", "neon-restore", src, "--project", env.project, "--database", "sec_shop",
    "--fly-app", env.app }, { cwd = dir })
  t.eq(r.code, 0, r.stderr)
  no_secret(r.stdout, "stdout")
  no_secret(r.stderr, "stderr")
  for _, name in ipairs(fs.listdir(dir .. "/.pgvault")) do
    no_secret(h.read(dir .. "/.pgvault/" .. name), "state file")
    t.eq(fs.stat(dir .. "/.pgvault/" .. name).mode, 384, "state file 0600")
  end
  t.eq(fs.stat(dir .. "/.pgvault").mode, 448, "state directory 0700")
end)

t.test("refused credentials are not echoed in the error", function()
  local dir, src = app_db()
  local r = env:pgvault({ "neon-restore", src, "--project", env.project, "--database", "sec_shop" },
    { cwd = dir, env = { NEON_API_KEY = "neon-wrong-key-SECRETPART" } })
  t.eq(r.code, 1)
  t.match(r.stderr, "401")
  t.no_match(r.stderr, "SECRETPART")
  r = env:pgvault({ "neon-restore", src, "--project", env.project, "--database", "sec_shop", "--fly-app", env.app },
    { cwd = dir, env = { FLY_API_TOKEN = "FlyV1 fm2_wrongSECRETPART" } })
  t.eq(r.code, 1)
  t.match(r.stderr, "401")
  t.no_match(r.stderr, "SECRETPART")
end)

t.test("an API error that echoes the new URL: the password is not in the error or the state file", function()
  local s = env:app_database("sec_echo_shop")
  env:fly_faults{ { method = "POST", path = "/secrets$", times = 10, action = { status = 422,
    body = { error = "invalid value for DATABASE_URL: " .. env:pooled_url("sec_echo_shop") } } } }
  local r = env:pgvault({ "neon-restore", s.src, "--project", env.project, "--database", "sec_echo_shop",
    "--fly-app", env.app }, { cwd = s.dir })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "step secret failed %(.*invalid value for DATABASE_URL")
  no_secret(r.stdout .. r.stderr, "output")
  for _, name in ipairs(fs.listdir(s.dir .. "/.pgvault")) do
    local text = h.read(s.dir .. "/.pgvault/" .. name)
    t.match(text, "invalid value for DATABASE_URL", "the error is recorded")
    no_secret(text, "state file")
  end
  env:fly_faults({})
end)

t.test("the keys have no flag: they could only be passed where every user sees them", function()
  for _, flag in ipairs({ "--neon-api-key", "--fly-api-token", "--api-key", "--token" }) do
    local r = h.pgvault({ "neon-restore", flag, "x" })
    t.eq(r.code, 2, flag)
  end
end)

-- The environment and command line of each pg_restore neon-restore runs,
-- as a wrapper in --pg-bin saw them in /proc before it ran the real one.
local function pg_restore_seen(run)
  local bin, seen = h.tmpdir(), h.tmpdir()
  h.write(bin .. "/pg_restore", string.format('#!/bin/sh\ncat /proc/$$/environ > "%s/environ.$$"\n'
    .. 'cat /proc/$$/cmdline > "%s/cmdline.$$"\nexec "%s/pg_restore" "$@"\n', seen, seen, pg.bindir))
  fs.chmod(bin .. "/pg_restore", 448)
  local r = run(bin)
  local out = {}
  for _, name in ipairs(fs.listdir(seen)) do
    local pid = name:match("^environ%.(%d+)$")
    if pid then
      out[#out + 1] = { environ = h.read(seen .. "/" .. name):gsub("%z", "\n"),
        cmdline = h.read(seen .. "/cmdline." .. pid):gsub("%z", " ") }
    end
  end
  return r, out
end

t.test("pg_restore gets no API key, Fly token or database password (/proc/PID/environ, argv)", function()
  local s = env:app_database("sec_child_shop")
  local r, runs = pg_restore_seen(function(bin)
    return env:pgvault({ "neon-restore", s.src, "--project", env.project, "--database", "sec_child_shop",
      "--fly-app", env.app, "--pg-bin", bin }, { cwd = s.dir, env = {
        FLY_ACCESS_TOKEN = env.fly_token, FLY_API_TOKEN = "fm2_lJPECAAAAAAAfaketokenpart-unused",
        PGPASSWORD = pg.password, DATABASE_URL = env:pooled_url("sec_child_shop") } })
  end)
  t.eq(r.code, 0, r.stderr)
  local restored = false
  for _, run in ipairs(runs) do
    restored = restored or run.cmdline:find("--exit-on-error", 1, true) ~= nil
    t.match(run.environ, "\nPATH=", "the wrapper saw an environment")
    for _, name in ipairs({ "NEON_API_KEY", "NEON_API_HOST", "FLY_API_TOKEN", "FLY_ACCESS_TOKEN", "PGPASSWORD",
      "DATABASE_URL" }) do
      t.no_match("\n" .. run.environ, "\n" .. name .. "=", name .. " reached pg_restore")
    end
    no_secret(run.environ, "pg_restore's environment")
    no_secret(run.cmdline, "pg_restore's command line")
  end
  t.ok(restored, "the restore ran through the wrapper: " .. r.stderr)
end)

t.test("close the fakes", function() env:close() end)
