-- covers: scripts/collation_check.lua scripts/collation_fix.lua scripts/lib/collation.lua scripts/lib/reindex.lua
-- collation-check and collation-fix on the harness cluster. A library
-- upgrade cannot be performed here, so the tests record, as superuser,
-- what such an upgrade leaves behind: a database or collation whose
-- recorded version differs from the library's (UPDATE of datcollversion /
-- collversion), and, for an ICU collation, a changed rule set under the same
-- name (colliculocale): indexes built under the old rules are then out of
-- order (amcheck sees it) or hold keys that are now equal (REINDEX of the
-- unique index fails), exactly as after a real ICU or glibc change.
local t = require "harness.testing"
local h = require "harness.env"
local pg = require "pgvault.pg"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local cjson = require "cjson"
local services = require "harness.services"

local PG = h.pg()
local PORT = math.tointeger(PG.port)

-- URL without the password: it reaches pgvault through PGPASSWORD.
local function url_of(db)
  return string.format("postgresql://%s@127.0.0.1:%d/%s", PG.user, PORT, db)
end

local function run(args, opts)
  opts = opts or {}
  local env = { PGPASSWORD = PG.password }
  for k, v in pairs(opts.env or {}) do env[k] = v end
  return h.pgvault(args, { env = env, timeout = opts.timeout or 120, cwd = opts.cwd })
end

local function admin(db, sql)
  return h.psql(PG.admin_url(db), sql)
end

-- A database owned by the test role with an ICU collation, text indexes on
-- the default collation (plain, expression, partial) and on the ICU one.
local function setup(name)
  local url = h.createdb(name)
  local c <close> = pg.connect(url)
  c:exec([[
    CREATE COLLATION ctest (provider = icu, locale = 'en');
    CREATE TABLE t (id int PRIMARY KEY, k text COLLATE ctest, d text);
    CREATE UNIQUE INDEX t_k ON t (k);
    CREATE INDEX t_d ON t (d);
    CREATE INDEX t_lower ON t (lower(d));
    CREATE INDEX t_part ON t (id) WHERE d > 'm';
    CREATE TABLE n (v int);
    CREATE INDEX n_v ON n (v);
    INSERT INTO t SELECT i, x, x || i FROM unnest(ARRAY['a', 'A', 'b', 'B', 'c', 'C', 'd']) WITH ORDINALITY AS u(x, i);
    INSERT INTO n SELECT generate_series(1, 100)]])
  return url
end

local function relfilenodes(url)
  local c <close> = pg.connect(url)
  local out = {}
  for _, r in ipairs(c:query("SELECT relname, relfilenode FROM pg_class WHERE relname IN " ..
    "('t_k', 't_d', 't_lower', 't_part', 't_pkey', 'n_v')")) do
    out[r.relname] = r.relfilenode
  end
  return out
end

local function db_version(name)
  return admin("postgres", "SELECT datcollversion || '|' || pg_database_collation_actual_version(oid) " ..
    "FROM pg_database WHERE datname = '" .. name .. "';"):gsub("\n$", "")
end

local function coll_version(name)
  return admin(name, "SELECT collversion FROM pg_collation WHERE collname = 'ctest';"):gsub("\n$", "")
end

t.test("a clean database: nothing to report, exit 0", function()
  local name = "coll_clean"
  setup(name)
  local r = run({ "collation-check", "--db", url_of(name) })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "database coll_clean %(libc en_US.UTF%-8%): default collation version [%d.]+ matches")
  t.match(r.stdout, "no collation version mismatch\n$")
  t.eq(r.stderr, "")
  r = run({ "collation-fix", "--db", url_of(name), "--no-backup" })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "database coll_clean: nothing to fix")
  h.dropdb(name)
end)

t.test("a wrong database version: the WARNING, the check, a dry run, the fix, the WARNING gone", function()
  local name = "coll_db"
  local url = setup(name)
  admin("postgres", "UPDATE pg_database SET datcollversion = '0.1' WHERE datname = '" .. name .. "';")
  local actual = db_version(name):match("|(.*)")

  -- The start-up WARNING is captured by the binding.
  local c = pg.connect(url)
  t.eq(c:notices()[1].sqlstate, "01000")
  t.match(c:notices()[1].message, "collation version mismatch")
  c:close()

  local r = run({ "collation-check", "--db", url_of(name) })
  t.eq(r.code, 1, "a mismatch exits 1")
  t.match(r.stdout, "database coll_db %(libc en_US.UTF%-8%): collation version mismatch: recorded 0%.1, "
    .. "the operating system provides " .. actual:gsub("%.", "%%."))
  t.match(r.stdout, "the server warned at connection: database \"coll_db\" has a collation version mismatch")
  t.match(r.stdout, "3 indexes depend on it and must be rebuilt")
  for _, ix in ipairs({ "t_d", "t_lower", "t_part" }) do
    t.match(r.stdout, "public%." .. ix .. " on public%.t %(btree")
  end
  t.no_match(r.stdout, "t_k on", "the ICU collation's index is not on the default collation")
  t.no_match(r.stdout, "n_v", "an integer index is not at risk")
  t.eq(r.stderr, "pgvault: collation-check: collation version mismatch in coll_db: run 'pgvault collation-fix' "
    .. "to rebuild the indexes and refresh the versions\n", "the report shows the WARNING; the log does not repeat it")

  r = run({ "collation-check", "--db", url_of(name), "--json" })
  t.eq(r.code, 1)
  local j = cjson.decode(r.stdout)
  t.eq(j.ok, false)
  local d = j.databases[1]
  t.eq(d.database.name, name)
  t.eq(d.database.recorded, "0.1")
  t.eq(d.database.actual, actual)
  t.eq(d.database.mismatch, true)
  t.eq(#d.startup_warnings, 1)
  t.eq(d.startup_warnings[1].sqlstate, "01000")
  local names = {}
  for _, ix in ipairs(d.indexes) do names[#names + 1] = ix.name end
  t.eq(names, { "public.t_d", "public.t_lower", "public.t_part" })
  t.eq(d.collations, {})

  local nodes = relfilenodes(url)
  local cwd = h.tmpdir()
  r = run({ "collation-fix", "--db", url_of(name), "--dry-run" }, { cwd = cwd })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "dry run: would back up coll_db to db_backups, then run:")
  t.match(r.stdout, "REINDEX INDEX public%.t_d;")
  t.match(r.stdout, "ALTER DATABASE \"coll_db\" REFRESH COLLATION VERSION;")
  t.eq(db_version(name), "0.1|" .. actual, "dry run changed nothing")
  t.eq(relfilenodes(url), nodes, "no index rebuilt")
  t.eq(fs.listdir(cwd), {}, "no backup taken")

  -- A backup that cannot be written stops the fix before anything changes.
  local blocker = h.tmpdir() .. "/file"
  h.write(blocker, "x")
  r = run({ "collation-fix", "--db", url_of(name), "--to", blocker .. "/sub" })
  t.eq(r.code, 1)
  t.match(r.stderr, "^pgvault: collation%-fix: [^\n]*" .. blocker:gsub("%p", "%%%0") .. "[^\n]*\n$")
  t.eq(db_version(name), "0.1|" .. actual, "nothing changed")
  t.eq(relfilenodes(url), nodes, "no index rebuilt")

  local backups = h.tmpdir()
  r = run({ "collation-fix", "--db", url_of(name), "--to", backups })
  t.eq(r.code, 0, r.stdout .. r.stderr)
  local archive = r.stdout:match("backup of coll_db: (%S+)\n")
  t.ok(archive, "backup path printed: " .. r.stdout)
  t.match(archive, "^" .. backups:gsub("%p", "%%%0") .. "/%d+_collation%-fix%-coll_db%.backup%.zst$")
  t.ok(fs.exists(archive) and fs.exists(archive .. ".manifest.json"), "archive and manifest written")
  t.ok(r.stdout:find("backup of coll_db", 1, true) < r.stdout:find("rebuilt public.t_d", 1, true),
    "the backup comes first")
  t.match(r.stdout, "rebuilt public%.t_d on public%.t")
  t.match(r.stdout, "refreshed database coll_db")
  t.match(r.stdout, "after the fix:\ndatabase coll_db %(libc en_US.UTF%-8%): default collation version [%d.]+ matches")
  t.match(r.stdout, "the server no longer warns about the collation version when connecting to coll_db")
  t.eq(db_version(name), actual .. "|" .. actual, "version refreshed")
  local after = relfilenodes(url)
  for _, ix in ipairs({ "t_d", "t_lower", "t_part" }) do t.neq(after[ix], nodes[ix], ix .. " rebuilt") end
  t.eq(after.n_v, nodes.n_v, "unrelated index left alone")
  t.eq(after.t_k, nodes.t_k, "index on the ICU collation left alone")
  c = pg.connect(url)
  t.eq(#c:notices(), 0, "no WARNING at connection any more")
  c:close()
  r = run({ "collation-check", "--db", url_of(name) })
  t.eq(r.code, 0, r.stdout)
  h.dropdb(name)
end)

t.test("a database whose default collation is ICU", function()
  local name = "coll_icudb"
  admin("postgres", "DROP DATABASE IF EXISTS " .. name .. " WITH (FORCE);\n" ..
    "CREATE DATABASE " .. name .. " OWNER " .. PG.user .. " TEMPLATE template0 ENCODING 'UTF8' " ..
    "LOCALE 'en_US.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE 'en';")
  local c = pg.connect(PG.url(name))
  c:exec("CREATE TABLE w (s text); CREATE INDEX w_s ON w (s); INSERT INTO w VALUES ('x'), ('Y')")
  c:close()
  admin("postgres", "UPDATE pg_database SET datcollversion = '0.1' WHERE datname = '" .. name .. "';")
  local r = run({ "collation-check", "--db", url_of(name) })
  t.eq(r.code, 1)
  t.match(r.stdout, "database coll_icudb %(icu en%): collation version mismatch: recorded 0%.1")
  t.match(r.stdout, "public%.w_s on public%.w %(btree, collation default")
  r = run({ "collation-fix", "--db", url_of(name), "--no-backup" })
  t.eq(r.code, 0, r.stdout .. r.stderr)
  t.match(r.stdout, "rebuilt public%.w_s")
  t.match(r.stdout, "refreshed database coll_icudb")
  h.dropdb(name)
end)

t.test("a changed ICU collation: --deep finds the out-of-order index, the fix rebuilds and refreshes it", function()
  local name = "coll_icu"
  setup(name)
  -- Same collation name, new rules (upper case first) and a stale version.
  admin(name, "UPDATE pg_collation SET colliculocale = 'en-u-kf-upper', collversion = '0.1' WHERE collname = 'ctest';")
  local r = run({ "collation-check", "--db", url_of(name) })
  t.eq(r.code, 1)
  t.match(r.stdout, "collation public%.ctest %(icu en%-u%-kf%-upper%): version mismatch: recorded 0%.1")
  t.match(r.stdout, "1 index depends on them and must be rebuilt:\n  public%.t_k on public%.t %(btree unique, "
    .. "collation public%.ctest")

  -- collation-check is read-only: without --create-amcheck it says what is
  -- missing (it used to create the extension silently), even as superuser.
  local function has_amcheck()
    return admin(name, "SELECT count(*) FROM pg_extension WHERE extname = 'amcheck';") == "1\n"
  end
  for _, db in ipairs({ url_of(name), PG.admin_url(name) }) do
    r = run({ "collation-check", "--db", db, "--deep" })
    t.eq(r.code, 1)
    t.match(r.stderr, "%-%-deep needs the amcheck extension, which database coll_icu does not have: run again with "
      .. "%-%-create%-amcheck")
    t.eq(has_amcheck(), false, "nothing created")
  end
  -- The test role may not create it: said plainly.
  r = run({ "collation-check", "--db", url_of(name), "--deep", "--create-amcheck" })
  t.eq(r.code, 1)
  t.match(r.stderr, "%-%-create%-amcheck: this user may not create the amcheck extension in database coll_icu")
  t.match(r.stderr, "ask a superuser to run CREATE EXTENSION amcheck")
  t.eq(has_amcheck(), false)

  -- As superuser (socket, trust), with --create-amcheck, amcheck runs and
  -- sees the wrong order.
  r = h.pgvault({ "collation-check", "--db", PG.admin_url(name), "--deep", "--create-amcheck" })
  t.eq(r.code, 1)
  t.match(r.stderr, "created the amcheck extension in schema public of database coll_icu")
  t.eq(admin(name, "SELECT extnamespace::regnamespace FROM pg_extension WHERE extname = 'amcheck';"), "public\n")
  t.match(r.stdout, "deep check %(amcheck bt_index_check%) of %d+ B%-tree indexes on versioned collations: 1 corrupt")
  t.match(r.stdout, "CORRUPT public%.t_k on public%.t: item order invariant violated for index \"t_k\"")
  t.match(r.stderr, "corrupt indexes in coll_icu")
  r = h.pgvault({ "collation-check", "--db", PG.admin_url(name), "--deep", "--json" })
  local j = cjson.decode(r.stdout)
  t.eq(j.databases[1].deep.corrupt, 1)

  r = run({ "collation-fix", "--db", url_of(name), "--no-backup", "--json" })
  t.eq(r.code, 0, r.stderr)
  j = cjson.decode(r.stdout)
  t.eq(j.ok, true)
  local res = j.databases[1]
  t.eq(res.status, "fixed")
  t.eq(res.rebuilt[1].index, "public.t_k")
  t.eq(res.refreshed[1].object, "collation public.ctest")
  t.eq(res.after.needs_fix, false)
  t.eq(coll_version(name), res.before.collations[1].actual)

  r = h.pgvault({ "collation-check", "--db", PG.admin_url(name), "--deep" })
  t.eq(r.code, 0, r.stdout .. r.stderr)
  t.match(r.stdout, "0 corrupt")
  h.dropdb(name)
end)

t.test("keys that became equal: the unique index is reported with its duplicates and its collation not refreshed",
  function()
  local name = "coll_dup"
  local url = setup(name)
  -- The ICU collation now compares case-insensitively: 'a' = 'A', 'b' = 'B', 'c' = 'C'.
  admin(name, "UPDATE pg_collation SET colliculocale = 'und-u-ks-level2', collisdeterministic = false, " ..
    "collversion = '0.1' WHERE collname = 'ctest';")
  admin("postgres", "UPDATE pg_database SET datcollversion = '0.1' WHERE datname = '" .. name .. "';")
  local nodes = relfilenodes(url)
  local r = run({ "collation-fix", "--db", url_of(name), "--no-backup" })
  t.eq(r.code, 1, r.stdout)
  t.match(r.stdout, "FAILED to rebuild public%.t_k on public%.t: could not create unique index \"t_k\" "
    .. "%(SQLSTATE 23505%); Key %(k%)=%(%a%) is duplicated%.")
  t.match(r.stdout, "keys that are now equal %(key: rows%), resolve them and run collation%-fix again:\n"
    .. "    %(a%): 2 rows\n    %(b%): 2 rows\n    %(c%): 2 rows\n")
  t.match(r.stdout, "NOT refreshed collation public%.ctest: index public%.t_k did not rebuild")
  t.match(r.stdout, "refreshed database coll_dup", "the default collation's indexes rebuilt, so it is refreshed")
  t.match(r.stderr, "collation fix incomplete for coll_dup")
  t.eq(coll_version(name), "0.1", "the collation keeps its old version")
  local after = relfilenodes(url)
  t.eq(after.t_k, nodes.t_k, "the unique index is untouched")
  t.neq(after.t_d, nodes.t_d)

  r = run({ "collation-fix", "--db", url_of(name), "--no-backup", "--json" })
  t.eq(r.code, 1)
  local res = cjson.decode(r.stdout).databases[1]
  t.eq(res.status, "incomplete")
  t.eq(res.failed[1].sqlstate, "23505")
  t.eq(res.failed[1].reason, "duplicate keys")
  t.eq(res.failed[1].duplicates, { { key = "(a)", rows = 2 }, { key = "(b)", rows = 2 }, { key = "(c)", rows = 2 } })
  h.dropdb(name)
end)

t.test("collations nothing uses are harmless: reported, refreshed when owned, never blocking", function()
  local name = "coll_unused"
  local url = setup(name)
  local c = pg.connect(url)
  c:exec("CREATE COLLATION mine_unused (provider = icu, locale = 'fr')")
  c:close()
  admin(name, "UPDATE pg_collation SET collversion = '0.1' WHERE collname IN ('de-x-icu', 'fr-x-icu', 'mine_unused');")
  local r = run({ "collation-check", "--db", url_of(name), "--json" })
  t.eq(r.code, 0, "nothing used is stale: " .. r.stderr)
  local d = cjson.decode(r.stdout).databases[1]
  t.eq(d.needs_fix, false)
  t.eq(d.collations, {})
  local names = {}
  for _, u in ipairs(d.unused_collations) do names[#names + 1] = u.name end
  t.eq(names, { 'pg_catalog."de-x-icu"', 'pg_catalog."fr-x-icu"', "public.mine_unused" })
  r = run({ "collation-check", "--db", url_of(name) })
  t.match(r.stdout, "3 collations nothing uses also have a stale version %(harmless")

  admin("postgres", "UPDATE pg_database SET datcollversion = '0.1' WHERE datname = '" .. name .. "';")
  r = run({ "collation-fix", "--db", url_of(name), "--no-backup" })
  t.eq(r.code, 0, r.stdout .. r.stderr)
  t.match(r.stdout, "refreshed collation public%.mine_unused")
  t.match(r.stdout, "left 2 unused collations with a stale version alone %(not owned by pgvault_test; harmless%)")
  t.match(r.stdout, "refreshed database coll_unused")
  t.eq(admin(name, "SELECT collname FROM pg_collation WHERE collversion = '0.1' ORDER BY 1;"), "de-x-icu\nfr-x-icu\n")
  h.dropdb(name)
end)

t.test("Ctrl-C during the rebuild: exit 130, the query cancelled, nothing refreshed", function()
  local name = "coll_int"
  setup(name)
  admin("postgres", "UPDATE pg_database SET datcollversion = '0.1' WHERE datname = '" .. name .. "';")
  -- Another session holds a lock on the table that REINDEX's SHARE lock
  -- waits for (while the check's catalog reads do not).
  local holder = pg.connect(PG.admin_url(name), { log_notices = false })
  holder:exec("BEGIN; LOCK TABLE t IN ROW EXCLUSIVE MODE")
  local p = proc.spawn({ h.bin, "collation-fix", "--db", url_of(name), "--no-backup",
    env = { PGPASSWORD = PG.password }, stdout = "pipe", stderr = "pipe" })
  -- A second session watches: inside its transaction the holder sees a
  -- frozen pg_stat_activity.
  local watcher = pg.connect(PG.admin_url(name), { log_notices = false })
  local ok, err = pcall(function()
    local deadline = proc.now() + 30
    local waiting
    repeat
      proc.sleep(0.1)
      waiting = watcher:query("SELECT pid FROM pg_stat_activity WHERE query LIKE 'REINDEX%' "
        .. "AND wait_event_type = 'Lock'")[1]
    until waiting or proc.now() > deadline
    t.ok(waiting, "REINDEX is waiting for the lock")
    p:kill("INT")
    t.eq(p:wait(15), 130, "exit code")
    local still = watcher:query("SELECT count(*) AS n FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
      waiting.pid)[1].n
    t.eq(still, 0, "the REINDEX no longer runs on the server")
  end)
  p:close()
  watcher:close()
  holder:exec("ROLLBACK")
  holder:close()
  if not ok then error(err, 0) end
  t.eq(db_version(name):match("^[^|]*"), "0.1", "nothing refreshed")
  h.dropdb(name)
end)

t.test("the fix refuses, before changing anything, when the user does not own what it must change", function()
  local name = "coll_owner"
  local url = setup(name)
  admin(name, "CREATE TABLE su (s text); CREATE INDEX su_s ON su (s);")
  admin("postgres", "UPDATE pg_database SET datcollversion = '0.1' WHERE datname = '" .. name .. "';")
  local nodes = relfilenodes(url)
  local r = run({ "collation-fix", "--db", url_of(name), "--no-backup" })
  t.eq(r.code, 1)
  t.match(r.stderr, "cannot fix database coll_owner as user pgvault_test: it needs ownership of table public%.su "
    .. "%(owner postgres%), to rebuild public%.su_s; connect as the owner or a superuser %(nothing was changed%)")
  t.eq(relfilenodes(url), nodes)
  t.eq(db_version(name):match("^[^|]*"), "0.1")
  h.dropdb(name)
end)

t.test("--all-databases on a private server, template1 included: CREATE DATABASE works again", function()
  local base = h.tmpdir()
  fs.chmod(base, 493)
  local own = services.start_pg(base)
  local ok, err = pcall(function()
    local function url(db)
      return string.format("postgresql:///%s?host=%s&port=%d&user=postgres", db, own.socket_dir,
        math.tointeger(own.port))
    end
    local c = pg.connect(url("postgres"))
    c:exec("CREATE DATABASE one TEMPLATE template0")
    c:exec("CREATE DATABASE two TEMPLATE template0")
    c:close()
    for _, db in ipairs({ "one", "two" }) do
      c = pg.connect(url(db))
      c:exec("CREATE TABLE t (s text); CREATE INDEX t_s ON t (s); INSERT INTO t VALUES ('x'), ('y')")
      c:close()
    end
    c = pg.connect(url("postgres"))
    c:exec("UPDATE pg_database SET datcollversion = '0.1' WHERE datname IN ('one', 'two', 'template1')")
    local e = t.raises(function() c:exec("CREATE DATABASE three") end, "collation version mismatch")
    t.eq(e.sqlstate, "XX000")
    c:close()

    local r = h.pgvault({ "collation-check", "--db", url("postgres") })
    t.eq(r.code, 0, "postgres itself is fine")
    t.match(r.stdout, "database one on the same server also has a mismatch")
    t.match(r.stdout, "database template1 on the same server also has a mismatch")

    r = h.pgvault({ "collation-check", "--db", url("postgres"), "--all-databases", "--json" })
    t.eq(r.code, 1)
    local seen = {}
    for _, d in ipairs(cjson.decode(r.stdout).databases) do seen[d.database.name] = d.needs_fix end
    t.eq(seen, { postgres = false, one = true, two = true, template1 = true })

    r = h.pgvault({ "collation-fix", "--db", url("postgres"), "--all-databases", "--no-backup" })
    t.eq(r.code, 0, r.stdout .. r.stderr)
    t.match(r.stdout, "rebuilt public%.t_s on public%.t")
    t.match(r.stdout, "refreshed database template1")
    t.match(r.stdout, "refreshed database two")
    c = pg.connect(url("postgres"))
    c:exec("CREATE DATABASE three")
    t.eq(c:query("SELECT count(*) AS n FROM pg_database WHERE datcollversion = '0.1'")[1].n, 0)
    c:close()
  end)
  services.stop_pg(own)
  if not ok then error(err, 0) end
end)

t.test("usage errors exit 2, naming the option", function()
  local r = run({ "collation-fix", "--bogus" })
  t.eq(r.code, 2)
  t.match(r.stderr, "unknown option %-%-bogus")
  r = run({ "collation-check", "extra" })
  t.eq(r.code, 2)
  r = run({ "collation-check", "--create-amcheck" })
  t.eq(r.code, 2)
  t.match(r.stderr, "^pgvault: collation%-check: %-%-create%-amcheck goes with %-%-deep")
  r = run({ "collation-fix", "--no-backup", "--to", "somewhere" })
  t.eq(r.code, 2, "--to would be ignored")
  t.match(r.stderr, "^pgvault: collation%-fix: %-%-to names where the backup goes, and %-%-no%-backup takes none")
  for _, args in ipairs({ { "collation-check", "--db" }, { "collation-fix", "--to" } }) do
    r = run(args)
    t.eq(r.code, 2)
    t.match(r.stderr, "option " .. args[2]:gsub("%-", "%%-") .. " needs a value")
  end
  r = run({ "collation-check", "--help" })
  t.eq(r.code, 0)
  t.match(r.stdout, "usage: pgvault collation%-check")
end)

t.test("an unreachable server is one clear line", function()
  local r = run({ "collation-check", "--db", "postgresql://u@127.0.0.1:1/x" })
  t.eq(r.code, 1)
  t.match(r.stderr, "^pgvault: collation%-check: cannot connect to database x as user u on 127%.0%.0%.1 port 1: ")
  t.eq(select(2, r.stderr:gsub("\n", "")), 1)
end)

t.test("url_for keeps every setting but the database name, quoting included", function()
  local collation = require "lib.collation"
  local u = collation.url_for("postgresql://us%20er:p%27w%5Cx@db.example:6543/shop?sslmode=require", "other db")
  t.eq(pg.parse_conninfo(u), { user = "us er", password = "p'w\\x", host = "db.example", port = "6543",
    dbname = "other db", sslmode = "require" })
  t.eq(pg.parse_conninfo(collation.url_for("", "x")), { dbname = "x" })
  t.eq(pg.parse_conninfo(collation.url_for("service=vault", "y")), { service = "vault", dbname = "y" })
end)

-- Regression: with test files sharing the cluster, a database dropped by
-- another session between the scan of pg_database and the version lookup
-- failed the whole check with "database with OID … does not exist".
t.test("a database dropped during the scan is read again, other errors are not retried", function()
  local collation = require "lib.collation"
  local pgvault = require "pgvault"
  local conn = pg.connect(PG.admin_url("postgres"))
  local calls = 0
  local flaky = setmetatable({
    query = function(_, sql, ...)
      calls = calls + 1
      if calls == 1 then
        error(pgvault.error("pg", "database with OID 1 does not exist", { sqlstate = "42704" }), 0)
      end
      return conn:query(sql, ...)
    end,
  }, { __index = conn })
  local dbs = collation.databases(flaky)
  t.eq(calls, 2, "read again once")
  local names = {}
  for _, d in ipairs(dbs) do names[d.name] = true end
  t.eq(names.postgres, true)
  calls = 0
  local broken = { query = function()
    calls = calls + 1
    error(pgvault.error("pg", "permission denied for table pg_database", { sqlstate = "42501" }), 0)
  end }
  t.raises(function() collation.databases(broken) end, "permission denied")
  t.eq(calls, 1, "a permission error is not retried")
  conn:close()
end)

-- Every documented option shown to take effect (issue 12), the ones the
-- tests above do not: the short forms, the default backup directory, the
-- default connection from libpq's environment, JSON lists as arrays.
t.test("-d, -a, -n; the backup goes to ./db_backups by default; no --db means libpq's environment", function()
  local name = "coll_opts"
  setup(name)
  admin("postgres", "UPDATE pg_database SET datcollversion = '0.1' WHERE datname = '" .. name .. "';")
  local r = run({ "collation-check", "-d", url_of(name), "-a", "--json" })
  t.eq(r.code, 1)
  local seen = {}
  for _, d in ipairs(cjson.decode(r.stdout).databases) do seen[d.database.name] = true end
  t.ok(seen[name] and seen.postgres, "-a checked every database: " .. r.stdout)
  r = run({ "collation-check" }, { env = { PGHOST = "127.0.0.1", PGPORT = tostring(PORT), PGUSER = PG.user,
    PGDATABASE = name } })
  t.eq(r.code, 1)
  t.match(r.stdout, "^database " .. name .. " ")
  local cwd = h.tmpdir()
  r = run({ "collation-fix", "-d", url_of(name), "-n" }, { cwd = cwd })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "dry run: would back up " .. name .. " to db_backups")
  t.eq(fs.listdir(cwd), {}, "-n changes nothing")
  r = run({ "collation-fix", "-d", url_of(name) }, { cwd = cwd })
  t.eq(r.code, 0, r.stdout .. r.stderr)
  local files = fs.listdir(cwd .. "/db_backups")
  t.eq(#files, 2, "the backup and its manifest in ./db_backups")
  t.match(files[1], "^%d+_collation%-fix%-" .. name .. "%.backup%.zst")
  h.dropdb(name)
end)

t.test("JSON lists are arrays, empty or not", function()
  local name = "coll_json"
  setup(name)
  local r = run({ "collation-check", "--db", url_of(name), "--json" })
  t.eq(r.code, 0, r.stderr)
  for _, list in ipairs({ "errors", "collations", "unused_collations", "indexes", "other_databases",
    "startup_warnings" }) do
    t.match(r.stdout, '"' .. list .. '":%[%]', list .. " is an empty array")
  end
  admin("postgres", "UPDATE pg_database SET datcollversion = '0.1' WHERE datname = '" .. name .. "';")
  r = run({ "collation-fix", "--db", url_of(name), "--no-backup", "--json" })
  t.eq(r.code, 0, r.stderr)
  for _, list in ipairs({ "failed", "not_refreshed" }) do
    t.match(r.stdout, '"' .. list .. '":%[%]', list .. " is an empty array")
  end
  t.match(r.stdout, '"rebuilt":%[{')
  t.match(r.stdout, '"plan":%["REINDEX INDEX public%.t_d"')
  h.dropdb(name)
end)
