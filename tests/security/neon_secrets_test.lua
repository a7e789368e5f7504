-- neon-restore's secrets (issue 11's class, in issue 16's workflow): the Neon
-- API key, the Fly token and the database password never reach a log line
-- (even with -v), an error, the state file or a command line; a token the
-- API refuses is not echoed back.
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

t.test("the keys have no flag: they could only be passed where every user sees them", function()
  for _, flag in ipairs({ "--neon-api-key", "--fly-api-token", "--api-key", "--token" }) do
    local r = h.pgvault({ "neon-restore", flag, "x" })
    t.eq(r.code, 2, flag)
  end
end)

t.test("close the fakes", function() env:close() end)
