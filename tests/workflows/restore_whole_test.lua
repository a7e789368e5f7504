-- covers: scripts/restore.lua scripts/lib/restore.lua scripts/lib/database.lua
-- restore keeps the whole database (issue 12): the replaced database's own
-- properties (ACL, settings of its own and per role, comment, connection
-- limit) survive the swap; a database that does not exist yet is created
-- like the backup's source (encoding, locale, provider, and those
-- properties, from the manifest); long non-ASCII names; --in-place checks
-- the archive before it drops anything and says what state a failure left;
-- …/latest picks the target database's backup; two restores of one
-- database; --pg-bin checked before anything is created. Each test fails on
-- the old code (regression tests).
local t = require "harness.testing"
local h = require "harness.env"
local cjson = require "cjson"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"

local PG = h.pg()
local ADMIN = PG.admin_url("postgres")

local function sql(q) return h.psql(ADMIN, q) end
local function lit(s) return "'" .. s:gsub("'", "''") .. "'" end
local function ident(s) return '"' .. s:gsub('"', '""') .. '"' end

local function databases(prefix)
  local list = {}
  for name in sql("SELECT datname FROM pg_database WHERE datname LIKE " .. lit(prefix .. "%")
    .. " ORDER BY 1;"):gmatch("[^\n]+") do list[#list + 1] = name end
  return list
end

local function url_of(name)
  return PG.url(name:gsub("[^%w_]", function(c) return string.format("%%%02X", c:byte()) end))
end

local function last_line(s) return s:match("([^\n]*)\n?$") end

local function backup(url, dir)
  local r = h.pgvault({ "-q", "backup", "--db", url, "--to", dir })
  assert(r.code == 0, r.stderr)
  return last_line(r.stdout)
end

sql([[DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'whole_reader') THEN CREATE ROLE whole_reader; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'whole_other') THEN CREATE ROLE whole_other; END IF;
END $$;]])

-- The properties pg_dump leaves out, as one comparable string.
local function properties(name)
  return sql(string.format([[SELECT concat_ws(' | ', pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding),
    d.datcollate, d.datlocprovider, d.daticulocale, d.datconnlimit, shobj_description(d.oid, 'pg_database'),
    has_database_privilege('whole_other', d.oid, 'CONNECT'), has_database_privilege('whole_reader', d.oid, 'CONNECT'),
    has_database_privilege('whole_reader', d.oid, 'CREATE'),
    (SELECT string_agg(coalesce(r.rolname, '*') || ':' || array_to_string(s.setconfig, ','), ' ' ORDER BY 1)
       FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE s.setdatabase = d.oid))
    FROM pg_database d WHERE d.datname = %s;]], lit(name)))
end

local function make_source(name, locale)
  sql("DROP DATABASE IF EXISTS " .. ident(name) .. " WITH (FORCE);")
  sql(string.format("CREATE DATABASE %s OWNER %s TEMPLATE template0 ENCODING 'UTF8' %s;", ident(name), PG.user,
    locale or "LC_COLLATE 'en_US.UTF-8' LC_CTYPE 'en_US.UTF-8'"))
  h.psql(url_of(name), "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g "
    .. "FROM generate_series(1, 50) g;")
  sql(string.format([[
    REVOKE CONNECT, TEMPORARY ON DATABASE %s FROM PUBLIC;
    GRANT CONNECT, CREATE ON DATABASE %s TO whole_reader;
    ALTER DATABASE %s SET work_mem = '7MB';
    ALTER DATABASE %s SET search_path = "$user", public, "odd ""schema""";
    ALTER ROLE whole_reader IN DATABASE %s SET statement_timeout = '42s';
    COMMENT ON DATABASE %s IS 'the shop''s data';
    ALTER DATABASE %s CONNECTION LIMIT 7;]], ident(name), ident(name), ident(name), ident(name), ident(name),
    ident(name), ident(name)))
  return url_of(name)
end

t.test("a swap keeps the replaced database's ACL, settings, comment and connection limit", function()
  local name = "whole_props_test"
  local url = make_source(name)
  local before = properties(name)
  t.match(before, "| f | t | t |", "the fixture: PUBLIC may not connect, whole_reader may")
  local d = h.tmpdir()
  local path = backup(url, d)
  local m = cjson.decode(h.read(path .. ".manifest.json"))
  t.eq(m.properties.connection_limit, 7, "the manifest records the properties")
  t.eq(m.properties.comment, "the shop's data")
  t.eq(m.properties.encoding, "UTF8")
  -- as a superuser, everything carries over
  local r = h.pgvault({ "restore", path, "--db", PG.admin_url(name), "--drop-old" })
  t.eq(r.code, 0, r.stderr)
  t.eq(properties(name), before, "the restored database is like the one it replaced")
  t.no_match(r.stderr, "cannot carry over")
  -- as the owner, all but another role's setting in it, which needs CREATEROLE: said once
  r = h.pgvault({ "restore", path, "--db", url, "--drop-old" })
  t.eq(r.code, 0, r.stderr)
  t.eq(properties(name), (before:gsub("whole_reader:statement_timeout=42s ", "")))
  local _, n = r.stderr:gsub("cannot carry over the setting statement_timeout=42s of role whole_reader: "
    .. "permission denied", "")
  t.eq(n, 1, r.stderr)
  t.match(r.stderr, "1 properties of database " .. name .. " could not be carried over")
  sql("DROP DATABASE " .. ident(name) .. " WITH (FORCE);")
end)

t.test("a database that does not exist is created like the backup's source (manifest)", function()
  local src = "whole_icu_source"
  local url = make_source(src, "LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'")
  local before = properties(src)
  t.match(before, "C.UTF%-8 | i | de%-DE | 7")
  local path = backup(url, h.tmpdir())
  local target = "whole_icu_target"
  sql("DROP DATABASE IF EXISTS " .. target .. " WITH (FORCE);")
  local r = h.pgvault({ "restore", path, "--db", PG.admin_url(target) })
  t.eq(r.code, 0, r.stderr)
  t.eq(properties(target), before, "encoding, locale, provider and properties from the manifest")
  sql("DROP DATABASE " .. target .. " WITH (FORCE); DROP DATABASE " .. src .. " WITH (FORCE);")
end)

t.test("long non-ASCII database names restore (2- and 3-byte characters)", function()
  for _, ch in ipairs({ "ж", "東" }) do
    local name = string.rep(ch, math.floor(63 / #ch))
    local url = make_source(name)
    local path = backup(url, h.tmpdir())
    for round = 1, 2 do -- into a new database, then over the live one
      if round == 1 then sql("DROP DATABASE " .. ident(name) .. " WITH (FORCE);") end
      local r = h.pgvault({ "restore", path, "--db", url, "--drop-old" })
      t.eq(r.code, 0, ch .. " round " .. round .. ": " .. r.stderr)
      t.eq(h.psql(url, "SELECT count(*) FROM t;"), "50\n")
    end
    t.eq(#databases(string.rep(ch, 5)), 1, "no temporary database left")
    sql("DROP DATABASE " .. ident(name) .. " WITH (FORCE);")
  end
end)

t.test("--in-place reads the whole backup before it drops anything", function()
  local name = "whole_inplace_test"
  local url = make_source(name)
  local d = h.tmpdir()
  local path = backup(url, d)
  local data = h.read(path)
  local cut = d .. "/cut.backup.zst"
  h.write(cut, data:sub(1, #data - 200))
  h.psql(url, "CREATE TABLE marker (v text); INSERT INTO marker VALUES ('still here');")
  local r = h.pgvault({ "restore", cut, "--db", url, "--in-place", "--yes" })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "^.*pgvault: restore: " .. cut:gsub("%p", "%%%0") .. ": zstd data is truncated.*%(nothing was "
    .. "dropped%)\n$")
  t.no_match(r.stderr, "is dropped and created again")
  t.eq(h.psql(url, "SELECT v FROM marker;"), "still here\n", "the database was not dropped")
  sql("DROP DATABASE " .. name .. " WITH (FORCE);")
end)

t.test("--in-place from a bucket checks the header and TOC before it drops anything", function()
  local s3 = require "pgvault.s3"
  local stream = require "pgvault.stream"
  local c = h.s3()
  local opts = require("harness.s3").direct()
  require("harness.s3").make_bucket("whole-inplace")
  local name = "whole_inplace_s3"
  local url = make_source(name)
  local r = h.pgvault({ "-q", "backup", "--db", url, "--to", "s3://whole-inplace/p/", "--compress", "none" },
    { env = c.env })
  t.eq(r.code, 0, r.stderr)
  local key = last_line(r.stdout)
  -- the same backup cut inside its table of contents, with a manifest that matches the cut object
  local cut = s3.get(key, opts):sub(1, 400)
  local sum = stream.run { stream.string(cut), stream.sha256(), stream.discard() }.sha256.sha256
  local m = cjson.decode(s3.get(key .. ".manifest.json", opts))
  local cut_key = key:gsub("_local%.backup$", "-2_local.backup")
  local text = s3.get(key .. ".manifest.json", opts):gsub('"bytes": ' .. m.stored.bytes, '"bytes": ' .. #cut, 1)
    :gsub(m.stored.sha256, sum)
  s3.put(cut_key, cut, opts)
  s3.put(cut_key .. ".manifest.json", text, opts)
  h.psql(url, "CREATE TABLE marker (v text); INSERT INTO marker VALUES ('still here');")
  r = h.pgvault({ "restore", cut_key, "--db", url, "--in-place", "--yes" }, { env = c.env })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "%(nothing was dropped%)\n$")
  t.eq(h.psql(url, "SELECT v FROM marker;"), "still here\n", "the database was not dropped")
  -- the whole object passes the check, and restores in place
  r = h.pgvault({ "restore", key, "--db", url, "--in-place", "--yes" }, { env = c.env })
  t.eq(r.code, 0, r.stderr)
  t.eq(h.psql(url, "SELECT count(*) FROM t;"), "50\n")
  sql("DROP DATABASE " .. name .. " WITH (FORCE);")
end)

t.test("a failure after the drop says the database is now empty and which backup to restore", function()
  local name = "whole_inplace_after"
  local url = make_source(name)
  local d = h.tmpdir()
  local good = backup(url, d)
  local bad = backup(url, d)
  -- the archive is whole, its manifest's row counts are not: found after the load
  local m = h.read(bad .. ".manifest.json"):gsub('"rows": 50', '"rows": 51')
  fs.remove(bad .. ".manifest.json")
  h.write(bad .. ".manifest.json", m)
  local r = h.pgvault({ "-q", "restore", bad, "--db", url, "--in-place", "--yes" })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "database " .. name .. " was dropped before the restore and is now empty: restore a backup "
    .. "into it, e%.g%. 'pgvault restore " .. good:gsub("%p", "%%%0") .. " %-%-db URL'")
  t.eq(h.psql(url, "SELECT count(*) FROM pg_class WHERE relname = 't';"), "0\n", "empty")
  t.eq(properties(name):match("^[^|]+| UTF8"), PG.user .. " | UTF8", "created again like it was")
  sql("DROP DATABASE " .. name .. " WITH (FORCE);")
end)

t.test("DIR/latest restores the newest backup of the target database, not another's newer one", function()
  local d = h.tmpdir()
  local a, b = "whole_latest_a", "whole_latest_b"
  local aurl, burl = h.createdb(a), h.createdb(b)
  h.psql(aurl, "CREATE TABLE who (v text); INSERT INTO who VALUES ('a');")
  h.psql(burl, "CREATE TABLE who (v text); INSERT INTO who VALUES ('b');")
  local apath = backup(aurl, d)
  backup(burl, d) -- newer, of another database
  h.psql(aurl, "UPDATE who SET v = 'changed';")
  local r = h.pgvault({ "restore", d .. "/latest", "--db", aurl, "--drop-old" })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "restored " .. apath:gsub("%p", "%%%0"))
  t.eq(h.psql(aurl, "SELECT v FROM who;"), "a\n")
  -- another database's backup into a new name: say which
  h.dropdb("whole_latest_c")
  r = h.pgvault({ "restore", d .. "/latest", "--db", PG.url("whole_latest_c") })
  t.eq(r.code, 1)
  t.match(r.stderr, "no complete backup of database whole_latest_c in " .. d:gsub("%p", "%%%0")
    .. " %(it holds backups of whole_latest_a, whole_latest_b%): name the backup, or choose the database with "
    .. "%-%-database NAME")
  t.eq(#databases("whole_latest_c"), 0)
  r = h.pgvault({ "restore", d .. "/latest", "--database", b, "--db", PG.url("whole_latest_c") })
  t.eq(r.code, 0, r.stderr)
  t.eq(h.psql(PG.url("whole_latest_c"), "SELECT v FROM who;"), "b\n")
  for _, n in ipairs({ a, b, "whole_latest_c" }) do h.dropdb(n) end
end)

t.test("s3://…/latest restores the newest backup of the target database", function()
  local c = h.s3()
  require("harness.s3").make_bucket("whole-latest")
  local a, b = "whole_s3_a", "whole_s3_b"
  local aurl, burl = h.createdb(a), h.createdb(b)
  h.psql(aurl, "CREATE TABLE who (v text); INSERT INTO who VALUES ('a');")
  h.psql(burl, "CREATE TABLE who (v text); INSERT INTO who VALUES ('b');")
  for _, u in ipairs({ aurl, burl }) do
    local r = h.pgvault({ "-q", "backup", "--db", u, "--to", "s3://whole-latest/p/" }, { env = c.env })
    t.eq(r.code, 0, r.stderr)
  end
  h.psql(aurl, "UPDATE who SET v = 'changed';")
  local r = h.pgvault({ "restore", "s3://whole-latest/p/latest", "--db", aurl, "--drop-old" }, { env = c.env })
  t.eq(r.code, 0, r.stderr)
  t.eq(h.psql(aurl, "SELECT v FROM who;"), "a\n")
  h.dropdb(a)
  h.dropdb(b)
end)

t.test("two restores of one database: one at a time, and their own names within one second", function()
  local name = "whole_twice_test"
  local url = h.createdb(name)
  h.psql(url, "CREATE TABLE t AS SELECT 1 AS x;")
  local path = backup(url, h.tmpdir())
  -- twice in one second (the same time stamp): the old copies get distinct names
  local script = h.tmpdir() .. "/twice.lua"
  h.write(script, [[
local restore = require "lib.restore"
for _ = 1, 2 do
  local r = restore.run { src = arg[1], db = arg[2], time = 1767225600 }
  print(r.old)
end
]])
  local r = h.pgvault({ "-q", "run", script, path, url })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, name .. "_old_20260101000000\n" .. name .. "_old_20260101000000_2\n")
  -- at the same time: the second is refused with our message, nothing created
  local lock = proc.spawn({ PG.bindir .. "/psql", "-X", "-q", "-d", ADMIN:gsub("postgres%?", "postgres?"), "-c",
    "SELECT pg_advisory_lock(hashtext('pgvault restore ' || '" .. name .. "')); SELECT pg_sleep(30);" })
  local deadline = proc.now() + 10
  while proc.now() < deadline and sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory';") == "0\n" do
    proc.sleep(0.05)
  end
  r = h.pgvault({ "restore", path, "--db", url })
  lock:kill("TERM")
  lock:wait(10)
  lock:close()
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "^pgvault: restore: another pgvault restore of database " .. name .. " is running on this "
    .. "server %(session %d+ of user [^)]+%): wait for it to finish\n$")
  t.eq(#databases(name .. "_restore"), 0)
  for _, n in ipairs(databases(name)) do h.dropdb(n) end
end)

t.test("restore --pg-bin /nonexistent fails before anything is created", function()
  local target = "whole_pgbin_test"
  h.dropdb(target)
  local path = backup(h.createdb("whole_pgbin_source"), h.tmpdir())
  local r = h.pgvault({ "restore", path, "--db", PG.url(target), "--pg-bin", "/nonexistent" })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "/nonexistent")
  t.eq(#databases(target), 0, "nothing created")
  h.dropdb("whole_pgbin_source")
end)
