-- covers: host/child.c bindings/proc.c bindings/dump/child_stage.c
-- Issue 11: children get an allow-list environment. pg_dump sees libpq's
-- settings and the locale, never pgvault's AWS keys, tokens or other
-- secrets; PGPASSWORD only as its caller passes it. Regression tests: on
-- the old code every child inherited pgvault's whole environment.
local t = require "harness.testing"
local h = require "harness.env"
local children = require "harness.children"
local fs = require "pgvault.fs"

local DB = "host_environ_security_test"
local url = h.createdb(DB)
t.teardown(function() h.dropdb(DB) end)
h.psql(url, "CREATE TABLE t (a int); INSERT INTO t VALUES (1);")
local PG = h.pg()

local SECRETS = {
  AWS_SECRET_ACCESS_KEY = "wJalrXUtnFEMI-aws-secret-value",
  AWS_SESSION_TOKEN = "aws-session-token-value",
  GITHUB_TOKEN = "ghp-token-value-xyz",
  NEON_API_KEY = "neon-api-key-value",
  FLY_API_TOKEN = "fly-api-token-value",
  FLY_ACCESS_TOKEN = "fly-access-token-value",
  DATABASE_URL = "postgresql://app:database-url-password@db/app",
}

-- The environment of pgvault's pg_dump while a backup runs, as a table.
local function pg_dump_environ(db_url, extra_env)
  local d = h.tmpdir()
  local release = children.lock_table(DB, "t")
  local env = { LC_MESSAGES = "C", PGAPPNAME = "pgvault-env-test", PGCONNECT_TIMEOUT = "30" }
  for k, v in pairs(SECRETS) do env[k] = v end
  for k, v in pairs(extra_env or {}) do env[k] = v end
  local handle, output = children.pgvault({ "backup", "--db", db_url, "--to", d }, env)
  local pid = children.find(handle:pid(), "pg_dump", "dbname=") -- not the --version probe
  local text = pid and children.environ(pid) or ""
  -- the password's way in: a passfile in memory pg_dump inherits (read through its pid)
  local passfile = text:match("PGPASSFILE=(/proc/self/fd/%d+)")
  local pass = passfile and { content = fs.read_file((passfile:gsub("^/proc/self/", "/proc/" .. pid .. "/"))),
    mode = fs.stat((passfile:gsub("^/proc/self/", "/proc/" .. pid .. "/"))).mode }
  release()
  local code = handle:wait(60)
  handle:close()
  local _, stderr = output()
  t.ok(pid, "pg_dump ran: " .. stderr)
  t.eq(code, 0, stderr)
  local vars = {}
  for line in text:gmatch("[^\n]+") do
    local k, v = line:match("^([^=]+)=(.*)$")
    if k then vars[k] = v end
  end
  return vars, text, pass
end

t.test("pg_dump's environment has libpq's settings and the locale, no secret of pgvault's", function()
  local vars, text, pass = pg_dump_environ(url, { PGPASSWORD = "pgpassword-from-env" })
  for name, value in pairs(SECRETS) do
    t.eq(vars[name], nil, name .. " reached pg_dump")
    t.ok(not text:find(value, 1, true), name .. "'s value reached pg_dump")
  end
  -- the URL's password reaches pg_dump through a private passfile (bindings/pg/child_conn.c)
  t.eq(vars.PGPASSWORD, nil, "no password in pg_dump's environment")
  t.ok(not text:find(PG.password, 1, true), "the URL's password is not in the environment")
  t.ok(not text:find("pgpassword-from-env", 1, true), "the environment's PGPASSWORD is not inherited")
  t.ok(pass, "PGPASSFILE names a file in memory: " .. text)
  t.eq(pass.content, "*:*:*:*:" .. PG.password .. "\n", "the URL's password is in the passfile")
  t.eq(pass.mode, 384, "the passfile is 0600")
  t.eq(vars.PGAPPNAME, "pgvault-env-test", "libpq settings are inherited")
  t.eq(vars.PGCONNECT_TIMEOUT, "30")
  t.eq(vars.LC_MESSAGES, "C", "the locale is inherited")
  t.ok(vars.PATH, "PATH is inherited")
end)

t.test("a URL without a password: the user's PGPASSWORD still reaches pg_dump, not through its environment", function()
  local bare = url:gsub(":[^:@/]*@", "@")
  t.ok(not bare:find(PG.password, 1, true), "the URL has no password: " .. bare)
  local vars, text, pass = pg_dump_environ(bare, { PGPASSWORD = PG.password }) -- (the backup succeeded)
  t.eq(vars.PGPASSWORD, nil)
  t.eq(pass and pass.content, "*:*:*:*:" .. PG.password .. "\n", "the user's PGPASSWORD is in the passfile")
  t.ok(not text:find(PG.password, 1, true), "not in the environment")
  t.eq(vars.AWS_SECRET_ACCESS_KEY, nil)
end)

t.test("proc.run and proc.spawn children get the allow-list plus explicit entries", function()
  local code = [[
    local a = proc.run { "sh", "-c", "env", env = { EXPLICIT_TOKEN = "given", LANG = false } }
    local p = proc.spawn { "sh", "-c", "env; echo END" }
    local lines = {}
    repeat local l = p:read_line(10); lines[#lines + 1] = l until not l or l == "END"
    p:wait(10)
    io.stdout:write(a.stdout, "----\n", table.concat(lines, "\n"), "\n")]]
  local env = { LANG = "C.UTF-8", TZ = "UTC", MY_SERVICE_PASSWORD = "service-pw", SOME_SETTING = "x" }
  for k, v in pairs(SECRETS) do env[k] = v end
  local r = h.pgvault({ "-e", code }, { env = env })
  t.eq(r.code, 0, r.stderr)
  local run_part, spawn_part = r.stdout:match("^(.-)%-%-%-%-\n(.*)$")
  t.ok(run_part and spawn_part, r.stdout)
  for _, part in ipairs({ run_part, spawn_part }) do
    for name in pairs(SECRETS) do t.no_match(part, "\n" .. name .. "=", name) end
    t.no_match(part, "MY_SERVICE_PASSWORD", "an arbitrary variable")
    t.no_match(part, "SOME_SETTING", "an arbitrary variable")
    t.match(part, "\nTZ=UTC\n", "TZ is inherited")
  end
  t.match(run_part, "\nEXPLICIT_TOKEN=given\n", "an explicit entry is added")
  t.no_match(run_part, "\nLANG=", "an explicit false removes an allowed variable")
  t.match(spawn_part, "\nLANG=C.UTF%-8\n")
end)
