-- covers: bindings/pg/conninfo.c bindings/pg/child_conn.c bindings/pg/connect.c bindings/dump/conn.c
-- Connection strings and secrets (issue 11): a malformed URL's password
-- never reaches an error message, whichever function reads it; no secret
-- connection keyword reaches a client program's command line.
local t = require "harness.testing"
local h = require "harness.env"
local children = require "harness.children"
local pg = require "pgvault.pg"
local dump = require "pgvault.dump"
local stream = require "pgvault.stream"
local fs = require "pgvault.fs"

local DB = "sec_conninfo"
local url = h.createdb(DB)
h.psql(url, "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);")
local PG = h.pg()
local PORT = math.tointeger(PG.port)

-- Strings a person might write, each with the pieces of its password that
-- must appear nowhere.
local malformed = {
  { text = string.format("postgresql://%s:Pa55@S3cretHost@127.0.0.1:%d/%s", PG.user, PORT, DB),
    pieces = { "Pa55@S3cretHost", "S3cretHost" } },
  { text = string.format("postgresql://%s:Sup3r/SecretTail9@127.0.0.1:%d/%s", PG.user, PORT, DB),
    pieces = { "Sup3r", "SecretTail9" } },
  { text = string.format("postgresql://%s@127.0.0.1:%d/%s?password=Tw0Parts&SecondHalf9", PG.user, PORT, DB),
    pieces = { "Tw0Parts", "SecondHalf9" } },
  { text = string.format("host=127.0.0.1 port=%d password=Spaced0ut TailWord9", PORT),
    pieces = { "Spaced0ut", "TailWord9" } },
  { text = string.format("postgresql://%s:Pct%%zzSecret7@127.0.0.1:%d/%s", PG.user, PORT, DB),
    pieces = { "zzSecret7" } },
  { text = string.format("postgresql://%s:Hidden99x@[::1/%s", PG.user, DB), pieces = { "Hidden99x" } },
}

local function no_piece(s, case, where)
  for _, p in ipairs(case.pieces) do
    t.ok(not s:find(p, 1, true), string.format("%s leaks %q of %q: %s", where, p, case.text, s))
  end
end

t.test("a malformed URL's password appears in no error, whichever function reads it", function()
  local readers = {
    ["pg.connect"] = function(s) return pg.connect(s) end,
    ["pg.parse_conninfo"] = function(s) return pg.parse_conninfo(s) end,
    ["pg.direct_url"] = function(s) return pg.direct_url(s) end,
    ["dump.conninfo"] = function(s) return dump.conninfo(s) end,
    ["dump.server_version"] = function(s) return dump.server_version(s) end,
    ["dump.find_bin"] = function(s) return dump.find_bin { program = "pg_dump", db = s } end,
    ["dump.pg_dump"] = function(s) return stream.run { dump.pg_dump { db = s }, stream.discard() } end,
    ["dump.psql"] = function(s) return stream.run { stream.string("SELECT 1;"), dump.psql { db = s } } end,
  }
  for _, case in ipairs(malformed) do
    for name, fn in pairs(readers) do
      local e = t.raises(function() fn(case.text) end, nil, name .. " " .. case.text)
      no_piece(tostring(e), case, name)
      t.no_match(tostring(e), "\n", name .. ": one line")
    end
  end
end)

t.test("a URL whose password holds '@' or '/' is refused with advice, not misread", function()
  local e = t.raises(function() pg.connect(malformed[1].text) end)
  t.eq(e.kind, "usage")
  t.match(e.message, "percent%-encode them %(@ as %%40, / as %%2F%)")
  -- The same password percent-encoded connects (the server refuses it,
  -- which shows that libpq read it whole).
  local ok = string.format("postgresql://%s:Pa55%%40S3cretHost@127.0.0.1:%d/%s", PG.user, PORT, DB)
  e = t.raises(function() pg.connect(ok) end, "password authentication failed")
  no_piece(tostring(e), malformed[1], "encoded")
  -- An '@' in a query parameter or the path is nobody's password.
  t.eq(pg.parse_conninfo("postgresql://h:5432/db?user=me@corp").user, "me@corp")
  t.eq(pg.parse_conninfo("postgresql://u:pw@h/db@x").dbname, "db@x")
end)

t.test("through the command line: one line, exit 2, no piece of the password", function()
  for _, case in ipairs(malformed) do
    local r = h.pgvault({ "collation-check", "--db", case.text }, { timeout = 60 })
    t.ok(r.code == 2 or r.code == 1, "fails: " .. r.stderr)
    no_piece(r.stderr .. r.stdout, case, "collation-check")
    t.eq(select(2, r.stderr:gsub("\n", "")), 1, "one line: " .. r.stderr)
  end
end)

local function mode(path)
  local st = fs.stat(path)
  return st and st.mode & 511
end

-- Runs pg_dump through pgvault with `db` (pgvault's own environment: env),
-- and looks at pg_dump while a lock holds it: its command line, its
-- environment, and the files that environment names.
local function watch_pg_dump(db, env, dbname)
  local release = children.lock_table(dbname or DB, "t")
  local d = h.tmpdir()
  -- The URL reaches pgvault in a file: an environment variable of the test
  -- would be inherited by pg_dump and look like a leak.
  fs.write_file(d .. "/url", db, { mode = 384 })
  local tmp = h.tmpdir()
  local e = { PGV_URL_FILE = d .. "/url", PGV_OUT = d .. "/out.backup", TMPDIR = tmp }
  for k, v in pairs(env or {}) do e[k] = v end
  local handle, output = children.pgvault({ "-e", [[
    local dump, stream, fs = require "pgvault.dump", require "pgvault.stream", require "pgvault.fs"
    local db = fs.read_file(os.getenv("PGV_URL_FILE"))
    stream.run { dump.pg_dump { db = db }, stream.file_writer(os.getenv("PGV_OUT")) }]] }, e)
  local seen = { pid = children.find(handle:pid(), "pg_dump", "dbname="), tmp = tmp }
  seen.cmdline = seen.pid and children.cmdline(seen.pid) or ""
  seen.environ = seen.pid and children.environ(seen.pid) or ""
  seen.files = {}
  for name in ("PGPASSFILE PGSERVICEFILE"):gmatch("%S+") do
    local path = seen.environ:match("\n" .. name .. "=([^\n]+)") or seen.environ:match("^" .. name .. "=([^\n]+)")
    if path then
      -- /proc/self/fd/N of pg_dump's: read through its pid from here
      local theirs = path:gsub("^/proc/self/", "/proc/" .. seen.pid .. "/")
      seen.files[name] = { path = path, mode = mode(theirs), content = fs.read_file(theirs),
 }
    end
  end
  release()
  seen.code = handle:wait(60)
  handle:close()
  seen.stdout, seen.stderr = output()
  return seen
end

-- The password and sslpassword (which no libpq variable carries) reach
-- pg_dump through files in memory it inherits, never its command line or
-- environment, and nothing touches the disk.
t.test("no secret on a client's command line or in its environment: password and sslpassword travel in memory files",
  function()
  local secret = "KeyPassw0rd9z"
  local seen = watch_pg_dump(url .. "?sslpassword=" .. secret .. "&sslmode=disable")
  t.eq(seen.code, 0, seen.stderr)
  t.ok(seen.pid, "pg_dump started")
  for _, where in ipairs({ "cmdline", "environ" }) do
    t.no_match(seen[where], secret, "sslpassword in the " .. where)
    t.no_match(seen[where], PG.password, "password in the " .. where)
  end
  t.match(seen.cmdline, "service='pgvault'")
  t.match(seen.cmdline, "dbname='" .. DB .. "'", "the rest of the connection string is on it")
  local pass, svc = seen.files.PGPASSFILE, seen.files.PGSERVICEFILE
  t.ok(pass and svc, "a passfile and a service file: " .. seen.environ)
  t.eq(pass.content, "*:*:*:*:" .. PG.password .. "\n")
  t.eq(svc.content, "[pgvault]\nsslpassword=" .. secret .. "\n")
  for _, f in ipairs({ pass, svc }) do
    t.match(f.path, "^/proc/self/fd/%d+$", "a file in memory, no file on disk")
    t.eq(f.mode, 384, f.path .. " is 0600")
  end
  t.eq(fs.listdir(seen.tmp), {}, "nothing written to TMPDIR")
  t.no_match(seen.stderr, secret, "nothing logged")
end)

-- A role of this test's own: other test files use the shared one meanwhile.
t.test("a password from pgvault's own PGPASSWORD reaches pg_dump the same way; ':' and '\\' escaped", function()
  local role, db, pw = "sec_conninfo_pw", "sec_conninfo_pw", "a:b\\c" .. PG.password
  h.psql(PG.admin_url("postgres"), string.format([[DROP DATABASE IF EXISTS %s WITH (FORCE);
    DROP ROLE IF EXISTS %s; CREATE ROLE %s LOGIN PASSWORD '%s';
    CREATE DATABASE %s OWNER %s TEMPLATE template0;]], db, role, role, pw, db, role))
  local ok, err = pcall(function()
    h.psql(PG.admin_url(db), "SET ROLE " .. role .. "; CREATE TABLE t (id int);")
    local bare = string.format("postgresql://%s@127.0.0.1:%d/%s", role, PORT, db)
    local seen = watch_pg_dump(bare, { PGPASSWORD = pw }, db)
    t.eq(seen.code, 0, seen.stderr)
    t.no_match(seen.environ, "PGPASSWORD", "not in pg_dump's environment")
    t.eq(seen.files.PGPASSFILE and seen.files.PGPASSFILE.content, "*:*:*:*:a\\:b\\\\c" .. PG.password .. "\n")
    -- a passfile= setting of the user's would win over ours: not passed on
    seen = watch_pg_dump(bare .. "?passfile=/nonexistent", { PGPASSWORD = pw }, db)
    t.eq(seen.code, 0, seen.stderr)
    t.no_match(seen.cmdline, "nonexistent")
  end)
  h.psql(PG.admin_url("postgres"), string.format("DROP DATABASE IF EXISTS %s WITH (FORCE); DROP ROLE IF EXISTS %s;",
    db, role))
  if not ok then error(err, 0) end
end)

t.test("sslpassword with service=: refused before anything runs, naming no secret", function()
  local e = t.raises(function()
    dump.pg_dump { db = "service=vault sslpassword=KeyPassw0rd9z", server_version = 150000 }
  end, "sslpassword in the connection string cannot reach a client program together with service=vault")
  t.eq(e.kind, "usage")
  t.no_match(tostring(e), "KeyPassw0rd9z")
  local _, _, has = dump.conninfo("host=h sslpassword=KeyPassw0rd9z")
  t.eq(has, false, "sslpassword is not a password")
  t.no_match(dump.conninfo("host=h sslpassword=KeyPassw0rd9z"), "KeyPassw0rd9z")
  t.match(dump.conninfo("host=h sslpassword=KeyPassw0rd9z", { password = true }), "sslpassword='KeyPassw0rd9z'")
end)
