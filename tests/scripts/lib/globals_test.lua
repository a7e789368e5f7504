-- covers: scripts/lib/globals.lua
-- lib.globals on a PostgreSQL cluster of its own (so that the databases
-- are known): which databases count, their suffixes (never colliding),
-- `nightly --all-databases` (one backup each; a database that fails does
-- not stop the others) and replaying roles and grants (idempotent, from a
-- zstd-compressed pg_dumpall --globals-only file).
local t = require "harness.testing"
local h = require "harness.env"
local services = require "harness.services"
local fs = require "pgvault.fs"
local globals = require "lib.globals"

-- Not one of h.tmpdir's: those go before the state closes, and the server
-- must be stopped first (when the state closes, by the keeper's __gc).
local base = fs.tmpdir("globals-pg")
fs.chmod(base, 493)
local PG = services.start_pg(base)
local keeper = setmetatable({}, { __gc = function()
  services.stop_pg(PG)
  pcall(fs.remove_tree, base)
end })
local function admin(db)
  return string.format("postgresql:///%s?host=%s&port=%d&user=postgres", db or "postgres", PG.socket_dir, PG.port)
end
local function user_url(db)
  return string.format("postgresql://%s:%s@127.0.0.1:%d/%s", PG.user, PG.password, PG.port, db or "postgres")
end
local function psql(url, sql) return h.psql(url, sql) end

psql(admin(), [[
CREATE DATABASE app OWNER pgvault_test;
CREATE DATABASE "crm-ü" OWNER pgvault_test;
CREATE DATABASE closed;
UPDATE pg_database SET datallowconn = false WHERE datname = 'closed';
CREATE DATABASE broken;
CREATE ROLE app_reader LOGIN PASSWORD 'reader-pw-123';
]])
psql(user_url("app"), "CREATE TABLE a (x int); INSERT INTO a SELECT generate_series(1, 100);")
psql(user_url("crm-ü"), "CREATE TABLE c (x text); INSERT INTO c VALUES ('ü');")
psql(admin("broken"), "CREATE TABLE secret (x int); REVOKE ALL ON secret FROM PUBLIC;")
psql(admin("app"), "GRANT SELECT ON a TO app_reader;")

t.test("databases: connectable, non-template, sorted; suffixes carry the database and never collide", function()
  t.ok(keeper, "the cluster runs")
  t.eq(globals.databases(user_url()), { "app", "broken", "crm-ü", "postgres" })
  t.eq(globals.suffix("prod", "app"), "prod--app")
  t.eq(globals.suffix("prod", "crm-ü"), "prod--crm_2d_c3_bc")
  t.neq(globals.suffix("prod", "a_b"), globals.suffix("prod", "a-b"), "no collision")
  local long = string.rep("é", 30)
  local s = globals.suffix("prod", long)
  t.ok(#s <= 64 and s:match("^prod%-%-[%w_]+$"), "a long name is cut with a digest: " .. s)
  t.neq(s, globals.suffix("prod", string.rep("é", 29) .. "e"), "the digest tells them apart")
  t.raises(function() globals.suffix(string.rep("e", 60), "app") end, "too long to hold database names")
end)

t.test("nightly --all-databases: one backup per database, each named; a failing one does not stop the others",
  function()
  local dir = h.tmpdir() .. "/b"
  local r = h.pgvault({ "nightly", "--all-databases", "--db", user_url(), "--to", dir, "--suffix", "prod",
    "--drill-every", "never" }, { timeout = 600 })
  t.eq(r.code, 1, "the run fails: " .. r.stderr)
  local made = {}
  for _, n in ipairs(fs.listdir(dir)) do
    local suffix = n:match("^%d+_(.-)%.backup%.zst$")
    if suffix then made[#made + 1] = suffix end
  end
  table.sort(made)
  t.eq(made, { "prod--app", "prod--crm_2d_c3_bc", "prod--postgres" }, "one backup per readable database")
  t.match(r.stderr, "nightly prod failed at backup: 1 of 5 failed: broken: .*permission denied", "names the failure")
  t.match(r.stderr, "cannot read role passwords: roles are dumped without them", "--no-role-passwords")
  local g
  for _, n in ipairs(fs.listdir(dir)) do g = g or n:match("^%d+_prod_globals%.sql%.zst$") and n end
  t.ok(g, "the roles and grants beside the databases")
  t.ok(fs.exists(dir .. "/" .. g .. ".manifest.json"), "with their manifest")
  local m = require("lib.manifest").read(dir .. "/" .. g .. ".manifest.json")
  t.eq(m.kind, "globals", "a manifest that says what it is")
  -- restore --globals: the roles come back from the dump just made
  psql(admin("app"), "REVOKE ALL ON a FROM app_reader;")
  psql(admin(), "DROP ROLE app_reader;")
  globals.apply { src = dir .. "/" .. g, db = admin() }
  t.eq(psql(admin(), "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'app_reader';"), "t\n", "role restored")
  for _, n in ipairs(fs.listdir(dir)) do t.no_match(n, "broken", "nothing of the failed database: " .. n) end
end)

t.test("roles and grants replay from a pg_dumpall --globals-only file, twice without harm", function()
  local d = h.tmpdir()
  local dumped = h.run({ PG.bindir .. "/pg_dumpall", "--globals-only", "-h", PG.socket_dir, "-p", tostring(PG.port),
    "-U", "postgres", "-f", d .. "/globals.sql" })
  t.eq(dumped.code, 0, dumped.stderr)
  t.eq(h.run({ "zstd", "-q", d .. "/globals.sql", "-o", d .. "/g_globals.sql.zst" }).code, 0, "zstd")
  psql(admin("app"), "REVOKE ALL ON a FROM app_reader;")
  psql(admin(), "DROP ROLE app_reader;")
  t.eq(psql(admin(), "SELECT count(*) FROM pg_roles WHERE rolname = 'app_reader';"), "0\n", "dropped")
  globals.apply { src = d .. "/g_globals.sql.zst", db = admin() }
  t.eq(psql(admin(), "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'app_reader';"), "t\n", "back, with LOGIN")
  globals.apply { src = d .. "/g_globals.sql.zst", db = admin() }
  t.eq(psql(admin(), "SELECT count(*) FROM pg_roles WHERE rolname = 'app_reader';"), "1\n", "applied twice")
  t.raises(function() globals.apply { src = d .. "/globals.sql.missing", db = admin() } end, "cannot open")
  h.write(d .. "/not.sql", "SELECT 1;\n")
  t.raises(function() globals.apply { src = d .. "/not.sql", db = admin() } end, "not a dump of roles and grants")
  t.eq(globals.idempotent("CREATE ROLE x;\nALTER ROLE x WITH LOGIN;\n"),
    "DO $pgvault$ BEGIN CREATE ROLE x; EXCEPTION WHEN duplicate_object THEN RAISE NOTICE 'role exists: kept'; END "
    .. "$pgvault$;\nALTER ROLE x WITH LOGIN;\n")
end)

