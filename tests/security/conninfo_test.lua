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

-- sslpassword has no environment variable: it reaches the child through a
-- private service file, never its command line.
t.test("no secret keyword on a client's command line: sslpassword and password travel privately", function()
  local secret = "KeyPassw0rd9z"
  local with = url .. "?sslpassword=" .. secret .. "&sslmode=disable"
  local release = children.lock_table(DB, "t")
  local d = h.tmpdir()
  local handle, output = children.pgvault({ "-e", [[
    local dump, stream = require "pgvault.dump", require "pgvault.stream"
    stream.run { dump.pg_dump { db = os.getenv("PGV_URL") }, stream.file_writer(os.getenv("PGV_OUT")) }]] },
    { PGV_URL = with, PGV_OUT = d .. "/out.backup" })
  local pid = children.find(handle:pid(), "pg_dump", "dbname=")
  local cmdline = pid and children.cmdline(pid) or ""
  local environ = pid and children.environ(pid) or ""
  local file = environ:match("PGSERVICEFILE=([^\n]+)")
  local st = file and fs.stat(file)
  local dir_st = file and fs.stat(file:match("^(.*)/[^/]+$"))
  local content = file and fs.read_file(file)
  release()
  local code = handle:wait(60)
  handle:close()
  local _, stderr = output()
  t.eq(code, 0, stderr)
  t.ok(pid, "pg_dump started")
  t.no_match(cmdline, secret, "sslpassword on the command line")
  t.no_match(cmdline, PG.password, "password on the command line")
  t.match(cmdline, "service='pgvault'")
  t.match(cmdline, "dbname='" .. DB .. "'", "the rest of the connection string is on it")
  t.match(environ, "\nPGPASSWORD=" .. PG.password .. "\n")
  t.ok(file, "a service file in the environment: " .. environ)
  t.eq(st and st.mode & 511, 384, "the service file is 0600")
  t.eq(dir_st and dir_st.mode & 511, 448, "in a 0700 directory")
  t.eq(content, "[pgvault]\nsslpassword=" .. secret .. "\n")
  t.ok(not fs.exists(file), "removed once pg_dump has run")
  t.no_match(stderr, secret, "nothing logged")
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
