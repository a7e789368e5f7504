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
local s3 = require "pgvault.s3"
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

-- app belongs to app_owner (the backups' role, pgvault_test, is a member);
-- readers may read its table and app_reader is one of the readers.
psql(admin(), [[
CREATE ROLE app_owner NOLOGIN;
CREATE ROLE readers NOLOGIN;
CREATE ROLE app_reader LOGIN PASSWORD 'reader-pw-123' IN ROLE readers;
GRANT app_owner TO pgvault_test;
CREATE DATABASE app OWNER app_owner;
CREATE DATABASE "crm-ü" OWNER pgvault_test;
CREATE DATABASE closed;
UPDATE pg_database SET datallowconn = false WHERE datname = 'closed';
CREATE DATABASE broken;
]])
psql(admin("app"), "CREATE TABLE a (x int); ALTER TABLE a OWNER TO app_owner; INSERT INTO a SELECT "
  .. "generate_series(1, 100); GRANT SELECT ON a TO readers;")
psql(user_url("crm-ü"), "CREATE TABLE c (x text); INSERT INTO c VALUES ('ü');")
psql(admin("broken"), "CREATE TABLE secret (x int); REVOKE ALL ON secret FROM PUBLIC;")

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
  t.raises(function() globals.apply { src = d .. "/globals.sql.missing", db = admin() } end, "no such file")
  h.write(d .. "/not.sql", "SELECT 1;\n")
  t.raises(function() globals.apply { src = d .. "/not.sql", db = admin() } end,
    "not a roles%-and%-grants dump of pgvault .*; apply a plain pg_dumpall file with psql %-f")
  t.eq(h.run({ "zstd", "-q", d .. "/not.sql", "-o", d .. "/x_globals.sql.zst" }).code, 0, "zstd")
  t.raises(function() globals.apply { src = d .. "/x_globals.sql.zst", db = admin() } end,
    "is not a dump of roles and grants")
  t.eq(globals.idempotent("CREATE ROLE x;\nALTER ROLE x WITH LOGIN;\n"),
    "DO $pgvault$ BEGIN CREATE ROLE x; EXCEPTION WHEN duplicate_object THEN RAISE NOTICE 'role x exists: kept'; "
    .. "END $pgvault$;\nALTER ROLE x WITH LOGIN;\n")
  t.match(globals.idempotent([[CREATE ROLE "o'k%";]]), [[RAISE NOTICE 'role "o''k%%%%" exists: kept']],
    "a quote or a percent sign in a role's name does not break the notice")
end)


-- The names a directory holds, without manifests and signatures.
local function archives(dir)
  local out = {}
  for _, n in ipairs(fs.listdir(dir)) do
    if not n:match("%.manifest%.json") then out[#out + 1] = n:gsub("^%d+_", "") end
  end
  table.sort(out)
  return out
end

t.test("backup --all-databases: one backup per database and the roles; a failing one fails the run, not the others",
  function()
  local dir = h.tmpdir() .. "/b"
  local r = h.pgvault({ "backup", "--all-databases", "--db", user_url(), "--to", dir, "--suffix", "prod" },
    { timeout = 600 })
  t.eq(r.code, 1, "the run fails: " .. r.stderr)
  t.eq(archives(dir), { "prod--app.backup.zst", "prod--crm_2d_c3_bc.backup.zst", "prod--postgres.backup.zst",
    "prod_globals.sql.zst" }, "every readable database, and the roles")
  local printed = {}
  for line in r.stdout:gmatch("[^\n]+") do printed[#printed + 1] = line:match("[^/]+$"):gsub("^%d+_", "") end
  t.eq(printed, { "prod--app.backup.zst", "prod--crm_2d_c3_bc.backup.zst", "prod--postgres.backup.zst",
    "prod_globals.sql.zst" }, "each path on standard output")
  local last = r.stderr:match("([^\n]*)\n?$")
  t.match(last, "^pgvault: backup: 1 of 5 failed: broken: backup of broken failed: .*permission denied", "one line")
  for _, n in ipairs(fs.listdir(dir)) do
    t.ok(fs.exists(dir .. "/" .. n:gsub("%.manifest%.json$", "")), "no manifest without its archive: " .. n)
  end
  r = h.pgvault({ "backup", "--all-databases", "--db", user_url(), "--to", dir, "--suffix", "bad name" })
  t.eq(r.code, 2, "a bad suffix is a usage error before anything is dumped")
  t.eq(#archives(dir), 4, "nothing more")
end)

t.test("restore --globals FILE into a fresh cluster state: roles, memberships, owners and grants come back", function()
  local dir = h.tmpdir() .. "/b"
  h.pgvault({ "backup", "--all-databases", "--db", user_url(), "--to", dir, "--suffix", "prod" }, { timeout = 600 })
  local g, app
  for _, n in ipairs(fs.listdir(dir)) do
    g = g or n:match("^%d+_prod_globals%.sql%.zst$") and dir .. "/" .. n
    app = app or n:match("^%d+_prod%-%-app%.backup%.zst$") and dir .. "/" .. n
  end
  t.ok(g and app, "the roles and app's backup")
  -- What a new server lacks: the database and the roles it needs.
  psql(admin(), "DROP DATABASE app;")
  psql(admin(), "DROP ROLE app_reader; DROP ROLE readers; DROP ROLE app_owner;")
  local r = h.pgvault({ "restore", app, "--db", admin("app") })
  t.eq(r.code, 1, "without the roles the restore cannot give the database its owner")
  t.match(r.stderr, "app_owner", "says which role is missing")
  t.eq(psql(admin(), "SELECT count(*) FROM pg_database WHERE datname LIKE 'app%';"), "0\n", "nothing left")
  -- A role without CREATEROLE is told what --globals needs before anything changes.
  r = h.pgvault({ "restore", app, "--globals", g, "--db", user_url("app") })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "\npgvault: restore: applying the roles and grants of [^\n]* needs a superuser or a role "
    .. "with CREATEROLE, and pgvault_test is neither: give %-%-db the URL of such a role\n$", "one line, the last")
  t.eq(psql(admin(), "SELECT count(*) FROM pg_roles WHERE rolname = 'app_owner';"), "0\n", "no role made")
  r = h.pgvault({ "restore", app, "--globals", g, "--db", admin("app") })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "roles and grants from .*_prod_globals%.sql%.zst applied", "said")
  local function yes(url, sql) return psql(url, "SELECT " .. sql .. ";") end
  t.eq(yes(admin(), "rolcanlogin FROM pg_roles WHERE rolname = 'app_reader'"), "t\n", "role, with LOGIN")
  t.eq(yes(admin(), "pg_has_role('app_reader', 'readers', 'MEMBER')"), "t\n", "membership")
  t.eq(yes(admin(), "pg_has_role('pgvault_test', 'app_owner', 'MEMBER')"), "t\n", "the backups' role's membership")
  t.eq(yes(admin(), "pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'app'"), "app_owner\n", "owner")
  t.eq(yes(admin("app"), "pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'a'"), "app_owner\n",
    "the table's owner")
  t.eq(yes(admin("app"), "has_table_privilege('readers', 'a', 'SELECT')"), "t\n", "the grant")
  t.eq(yes(user_url("app"), "count(*) FROM a"), "100\n", "the rows")
  r = h.pgvault({ "restore", app, "--globals", dir .. "/missing_globals.sql.zst", "--db", admin("app") })
  t.eq(r.code, 1, "a missing globals file")
  t.match(r.stderr, "missing_globals%.sql%.zst: no such file", "names it")
  t.eq(psql(admin(), "SELECT count(*) FROM pg_database WHERE datname LIKE 'app_%';"), "0\n", "nothing created")
end)

t.test("nightly --all-databases --sign to a bucket: every manifest signed, the roles too; read back with the key",
  function()
  local keys = h.tmpdir()
  local KEY = keys .. "/sign.key"
  t.eq(h.pgvault({ "keygen", "--sign", "-o", KEY }).code, 0, "keygen")
  t.eq(h.run({ "age-keygen", "-o", keys .. "/age.txt" }).code, 0, "age-keygen")
  local recipient = h.run({ "age-keygen", "-y", keys .. "/age.txt" }).stdout:match("%S+")
  local s3h = require "harness.s3"
  local dest = "s3://" .. s3h.make_bucket("globals-signed") .. "/prod/"
  psql(admin("broken"), "GRANT SELECT ON secret TO pgvault_test;")
  local r = h.pgvault({ "nightly", "--all-databases", "--db", user_url(), "--to", dest, "--suffix", "prod",
    "--drill-every", "never", "--sign", KEY, "-r", recipient, "--identity", keys .. "/age.txt", "--json" },
    { env = h.s3().env, timeout = 600 })
  psql(admin("broken"), "REVOKE SELECT ON secret FROM pgvault_test;")
  t.eq(r.code, 0, r.stderr)
  local summary = require("cjson").decode(r.stdout)
  t.match(summary.steps[3].detail, "every byte read back and checked %(%d+ rows%), signatures good", "read back")
  local c = s3.client(s3h.direct())
  local d = h.tmpdir()
  local manifests, globals_path = {}, nil
  for _, o in ipairs(c:list(dest)) do
    local name = o.key:match("[^/]+$")
    if name:match("%.manifest%.json$") then manifests[#manifests + 1] = name end
    if name:match("_globals%.sql%.zst%.age$") then globals_path = dest .. name end
  end
  table.sort(manifests)
  t.eq(#manifests, 5, "four databases and the roles: " .. table.concat(manifests, " "))
  for _, name in ipairs(manifests) do
    h.write(d .. "/" .. name, c:get(dest .. name))
    h.write(d .. "/" .. name .. ".minisig", c:get(dest .. name .. ".minisig"))
    local ms = h.run({ "minisign", "-V", "-p", KEY .. ".pub", "-m", d .. "/" .. name })
    t.eq(ms.code, 0, "minisign -V " .. name .. ": " .. ms.stderr)
  end
  -- the roles, checked against the signature as they are applied
  psql(admin(), "DROP ROLE app_reader;")
  globals.apply { src = globals_path, db = admin(), s3 = s3h.direct(), trust = { KEY .. ".pub" },
    identities = require("lib.layers").read_identities({ keys .. "/age.txt" }) }
  t.eq(psql(admin(), "SELECT pg_has_role('app_reader', 'readers', 'MEMBER');"), "t\n", "applied")
  -- replaced by whoever can write to the bucket: refused before psql runs
  local forged = h.tmpdir() .. "/f_globals.sql.zst"
  h.write(d .. "/f.sql", "-- PostgreSQL database cluster dump\nCREATE ROLE intruder SUPERUSER LOGIN;\n")
  t.eq(h.run({ "zstd", "-q", d .. "/f.sql", "-o", forged }).code, 0, "zstd")
  c:put(globals_path, h.read(forged))
  local ok, err = pcall(globals.apply, { src = globals_path, db = admin(), s3 = s3h.direct(),
    trust = { KEY .. ".pub" }, identities = require("lib.layers").read_identities({ keys .. "/age.txt" }) })
  t.ok(not ok, "refused")
  t.eq(err.kind, "trust", tostring(err.message))
  t.eq(psql(admin(), "SELECT count(*) FROM pg_roles WHERE rolname = 'intruder';"), "0\n", "nothing applied")
end)

t.test("tablespaces and password hashes: a tablespace the server has is kept; no hash reaches a log line", function()
  local loc = base .. "/ts_keep"
  fs.mkdir_p(loc)
  if h.run({ "id", "-u" }).stdout == "0\n" then t.eq(h.run({ "chown", "postgres", loc }).code, 0, "chown") end
  psql(admin(), "CREATE TABLESPACE ts_keep LOCATION '" .. loc .. "';")
  psql(admin(), "GRANT CREATE ON TABLESPACE ts_keep TO readers;")
  local function lua(code, ...) return h.pgvault({ "-e", string.format(code, ...) }, { timeout = 300 }) end
  local d = h.tmpdir()
  local r = lua("require('lib.globals').dump{ db = %q, to = %q, env = 'prod', stamp = '20260101000000' }", admin(), d)
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "password hashes go into the roles%-and%-grants dump unencrypted: .*give %-r", "warned")
  local g = d .. "/20260101000000_prod_globals.sql.zst"
  local sql = h.run({ "zstd", "-dc", g }).stdout
  t.match(sql, "PASSWORD 'SCRAM%-SHA%-256%$", "the hashes are in the dump (what the checks below look for)")
  t.match(sql, "\nCREATE TABLESPACE ts_keep OWNER ", "and the tablespace")
  -- replayed onto the server that has them all: the tablespace is kept
  local applied = lua("require('lib.globals').apply{ src = %q, db = %q }", g, admin())
  t.eq(applied.code, 0, applied.stderr)
  t.match(applied.stderr, "tablespace ts_keep exists on the server: kept as it is", "said")
  t.eq(psql(admin(), "SELECT has_tablespace_privilege('readers', 'ts_keep', 'CREATE');"), "t\n", "its grant stays")
  -- by a role that may not change roles: one line, and still no hash
  local refused = lua("require('lib.globals').apply{ src = %q, db = %q }", g, user_url())
  t.eq(refused.code, 1, refused.stderr)
  t.match(refused.stderr, "applying the roles and grants of .*_globals%.sql%.zst needs a superuser or a role with "
    .. "CREATEROLE", "says what is needed")
  for _, out in ipairs({ r.stderr, applied.stderr, refused.stderr, r.stdout, applied.stdout, refused.stdout }) do
    t.no_match(out, "SCRAM%-SHA%-256", "no password hash in what pgvault printed")
  end
  t.eq(globals.skip_tablespaces('CREATE TABLESPACE "a ""b" OWNER x LOCATION \'/l\';\nCREATE TABLESPACE c OWNER x '
    .. "LOCATION '/m';\n", { ['a "b'] = true }), '-- pgvault: tablespace "a ""b" exists: not created\n'
    .. "CREATE TABLESPACE c OWNER x LOCATION '/m';\n", "a quoted name; one the server lacks is created")
  psql(admin(), "REVOKE CREATE ON TABLESPACE ts_keep FROM readers;")
  psql(admin(), "DROP TABLESPACE ts_keep;")
end)
