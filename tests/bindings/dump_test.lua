-- covers: bindings/dump.c bindings/dump/ bindings/pg/child_conn.c bindings/pg/message.c
-- pgvault.dump: client binaries chosen by server version, connection
-- strings without passwords, pg_dump as a source and pg_restore / psql as
-- sinks against the harness cluster, their failures as one clear line, a
-- killed pg_dump, and no password on any child's command line.
local t = require "harness.testing"
local h = require "harness.env"
local children = require "harness.children"
local dump = require "pgvault.dump"
local stream = require "pgvault.stream"
local proc = require "pgvault.proc"
local fs = require "pgvault.fs"

local DB = "dump_binding_test"
local url = h.createdb(DB)
h.psql(url, [[CREATE TABLE t (id int PRIMARY KEY, v text);
  INSERT INTO t SELECT g, 'välue ' || g FROM generate_series(1, 1000) g;]])
local PG = h.pg()

t.test("find_bin picks the newest client that fits the server", function()
  local b = dump.find_bin { program = "pg_dump", server_version = 150018 }
  t.eq(b.major, 15)
  t.match(b.version, "^15%.%d+$")
  t.ok(fs.exists(b.path), b.path)
  local r = dump.find_bin { program = "pg_restore", pg_bin = PG.bindir }
  t.eq(r.path, PG.bindir .. "/pg_restore")
  t.eq(dump.find_bin { program = "psql", db = url }.major, 15, "server version probed from db=")
end)

t.test("no client new enough: the error names the package to install", function()
  local e = t.raises(function() dump.find_bin { program = "pg_dump", server_version = 170002 } end,
    "server is PostgreSQL 17 but the newest pg_dump here is 15 .*: install postgresql%-client%-17")
  t.eq(e.kind, "config")
  t.eq(e.package, "postgresql-client-17")
  t.raises(function() dump.find_bin { program = "pg_dump", server_version = 170002, pg_bin = PG.bindir } end,
    "point %-%-pg%-bin at a pg_dump 17 or newer, or install postgresql%-client%-17")
  local empty = h.tmpdir()
  t.raises(function() dump.find_bin { program = "pg_dump", pg_bin = empty } end,
    "no pg_dump in " .. empty:gsub("%p", "%%%0"))
  t.raises(function() dump.pg_dump { db = url, server_version = 180000 } end, "postgresql%-client%-18")
end)

t.test("conninfo drops the password unless asked, and quotes what it keeps", function()
  local ci, db, has_pw = dump.conninfo("postgresql://al%27ice:s3cr%5Cet%27pw@db.example:6543/app?sslmode=require")
  t.eq(db, "app")
  t.eq(has_pw, true)
  t.no_match(ci, "s3cr", "no password")
  t.match(ci, "user='al\\'ice'")
  t.match(ci, "sslmode='require'")
  local with = dump.conninfo("host=/tmp dbname=x password=p4ssw0rd", { dbname = "y", password = true })
  t.match(with, "dbname='y'")
  t.match(with, "password='p4ssw0rd'")
  t.raises(function() dump.conninfo("postgresql://[bad") end, "invalid connection string")
end)

t.test("pg_dump streams a custom-format archive; pg_restore reads it back", function()
  local r = stream.run { dump.pg_dump { db = url, compress = 0 }, stream.sha256(), stream.buffer() }
  t.eq(r.buffer.data:sub(1, 5), "PGDMP")
  t.eq(r.pg_dump.exit_status, 0)
  t.eq(r.pg_dump.major, 15)
  t.eq(r.pg_dump.bytes, #r.buffer.data)
  t.eq(r.pg_dump.warnings, {})
  local target = h.createdb("dump_binding_copy")
  local back = stream.run { stream.string(r.buffer.data),
    dump.pg_restore { db = target, args = { "--exit-on-error" } } }
  t.eq(back.pg_restore.exit_status, 0)
  t.eq(h.psql(target, "SELECT count(*), max(v) FROM t;"), "1000|välue 999\n")
  -- pg_dump's own compression, as the PostgreSQL 15 client spells it
  local gz = stream.run { dump.pg_dump { db = url, compress = "gzip:6" }, stream.buffer() }
  t.ok(#gz.buffer.data < #r.buffer.data, "gzip archive is smaller")
  h.dropdb("dump_binding_copy")
end)

t.test("a plain-format dump piped into psql copies a database", function()
  local target = h.createdb("dump_binding_plain")
  local r = stream.run { dump.pg_dump { db = url, format = "plain", args = { "--table=t" } },
    dump.psql { db = target } }
  t.eq(r.pg_dump.exit_status, 0)
  t.eq(r.psql.exit_status, 0)
  t.eq(r.psql.bytes, r.pg_dump.bytes, "every byte reached psql")
  t.eq(h.psql(target, "SELECT count(*) FROM t;"), "1000\n")
  h.dropdb("dump_binding_plain")
end)

t.test("psql runs a script fed on its stdin and stops at the first error", function()
  local r = stream.run { stream.string("CREATE TABLE from_psql (a int); INSERT INTO from_psql VALUES (7);"),
    dump.psql { db = url } }
  t.eq(r.psql.exit_status, 0)
  t.eq(h.psql(url, "SELECT a FROM from_psql;"), "7\n")
  local e = t.raises(function() stream.run { stream.string("SELECT 1/0;"), dump.psql { db = url } } end,
    "psql exited with status 3: .*division by zero")
  t.eq(e.kind, "child")
  -- a child that stops reading while its input pipe is full (8 MiB of a
  -- comment after the error): the pipeline ends with its complaint, no hang
  local big = "SELECT 1/0;\n" .. string.rep("-- " .. string.rep("x", 1020) .. "\n", 8192)
  local t0 = proc.now()
  e = t.raises(function() stream.run { stream.string(big), dump.psql { db = url } } end,
    "psql exited with status 3: .*division by zero")
  t.eq(e.kind, "child")
  t.ok(proc.now() - t0 < 30, "no hang")
end)

t.test("failures are one clear line: bad password, missing database, closed port, bad archive", function()
  local bad = url:gsub(":[^:@/]*@", ":wrong-password@")
  local e = t.raises(function() stream.run { dump.pg_dump { db = bad }, stream.discard() } end,
    "password authentication failed")
  t.no_match(tostring(e), "\n", "one line")
  t.no_match(tostring(e), "wrong%-password", "no password in the message")
  -- with the version given there is no probe: pg_dump's own complaint
  e = t.raises(function() stream.run { dump.pg_dump { db = bad, server_version = 150000 }, stream.discard() } end,
    "pg_dump exited with status 1: .*password authentication failed")
  t.eq(e.kind, "child")
  t.no_match(tostring(e), "\n", "one line")
  t.raises(function() stream.run { dump.pg_dump { db = PG.url("no_such_db_here") }, stream.discard() } end,
    "database \"no_such_db_here\" does not exist")
  local port = math.tointeger(PG.port) + 1
  t.raises(function()
    stream.run { dump.pg_dump { db = "postgresql://u:p@127.0.0.1:" .. port .. "/x" }, stream.discard() }
  end, "Connection refused")
  e = t.raises(function()
    stream.run { stream.string("not an archive"), dump.pg_restore { db = url } }
  end, "pg_restore exited with status 1: input file does not appear to be a valid archive")
  t.no_match(tostring(e), "\n", "one line")
end)

t.test("misuse is an argument error", function()
  t.raises(function() dump.pg_dump {} end, "db")
  t.raises(function() dump.pg_dump { db = url, compress = 12 } end, "0..9")
  t.raises(function() dump.pg_dump { db = url, compress = "brotli" } end, "compress must be")
  t.raises(function() dump.pg_dump { db = url, args = { "--dbname=x password=y" } } end, "passwords never")
  t.raises(function() dump.pg_restore { db = url, jobs = 4 } end, "needs file=")
  -- a misspelt option is an error, never silently ignored
  t.raises(function() dump.pg_dump { db = url, compres = 3 } end, "unknown option 'compres' %(known: db, dbname")
  t.raises(function() dump.pg_restore { db = url, job = 4 } end, "unknown option 'job'")
  t.raises(function() dump.psql { db = url, file = "x.sql" } end, "unknown option 'file'")
  t.raises(function() dump.find_bin { programme = "psql" } end, "unknown option 'programme'")
  t.raises(function() dump.conninfo(url, { db_name = "x" }) end, "unknown option 'db_name'")
  t.raises(function() dump.conninfo(url, "x") end, "table expected")
end)

t.test("a killed pg_dump fails the pipeline and leaves no file", function()
  local release = children.lock_table(DB, "t")
  local d = h.tmpdir()
  local handle, output = children.pgvault({ "-e", [[
    local dump, stream = require "pgvault.dump", require "pgvault.stream"
    stream.run { dump.pg_dump { db = os.getenv("PGV_URL") }, stream.zstd(),
      stream.file_writer(os.getenv("PGV_OUT")) }]] },
    { PGV_URL = url, PGV_OUT = d .. "/out.backup.zst" })
  local pid = children.find(handle:pid(), "pg_dump", "dbname=")
  t.ok(pid, "pg_dump started")
  require("pgvault.proc").kill(pid, "KILL")
  local code = handle:wait(60)
  handle:close()
  release()
  local _, stderr = output()
  t.eq(code, 1)
  t.match(stderr, "pg_dump was killed by signal 9")
  t.eq(#fs.listdir(d), 0, "no file, no partial file")
end)

t.test("a child's warnings: one line each with their sentences, in the report; the caller may log them", function()
  local script = [[DO $$ BEGIN
    RAISE WARNING 'first careful' USING DETAIL = 'Some detail.', HINT = 'Some hint.';
    RAISE WARNING 'second';
    RAISE NOTICE 'just so';
  END $$;]]
  local code = [[local dump, stream = require "pgvault.dump", require "pgvault.stream"
    local r = stream.run { stream.string(os.getenv("SQL")),
      dump.psql { db = os.getenv("PGV_URL"), log_warnings = os.getenv("QUIET") == nil } }
    for _, w in ipairs(r.psql.warnings) do print(w) end]]
  local r = h.pgvault({ "-e", code }, { env = { PGV_URL = url, SQL = script } })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, "first careful. Some detail. Hint: Some hint.\nsecond\n", "the report keeps each whole")
  t.match(r.stderr, "pgvault: warning: psql: warning: first careful%. Some detail%. Hint: Some hint%.\n")
  t.match(r.stderr, "pgvault: warning: psql: warning: second\n")
  t.match(r.stderr, "pgvault: info: psql: NOTICE:  just so\n")
  t.eq(select(2, r.stderr:gsub("first careful", "")), 1, "said once")
  r = h.pgvault({ "-e", code }, { env = { PGV_URL = url, SQL = script, QUIET = "1" } })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, "first careful. Some detail. Hint: Some hint.\nsecond\n")
  t.no_match(r.stderr, "careful", "log_warnings = false: the caller says them")
end)

t.test("child stderr is forwarded to the log, redacted, and the error is too", function()
  local code = [[local dump, stream = require "pgvault.dump", require "pgvault.stream"
    local url, pw = os.getenv("PGV_URL"), os.getenv("PGV_PW")
    stream.run { stream.string("DO $$ BEGIN RAISE WARNING 'leaked %', '" .. pw .. "'; END $$;\n"
      .. "SELECT 'again " .. pw .. "'::int;"), dump.psql { db = url } }]]
  local r = h.pgvault({ "-e", code }, { env = { PGV_URL = url, PGV_PW = PG.password } })
  t.eq(r.code, 1)
  t.match(r.stderr, "pgvault: warning: psql: warning: leaked %*%*%*\n", "the warning is logged, masked")
  t.match(r.stderr, "psql exited with status 3: .*invalid input syntax for type integer: \"again %*%*%*\"")
  t.no_match(r.stderr, PG.password, "the password appears nowhere")
end)

-- Neon's pooled host is PgBouncer in transaction mode, which pg_dump,
-- pg_restore and psql cannot work through: they get the direct host.
-- hostaddr stands in for Neon's DNS (both names lead to its proxy, which
-- routes by name).
t.test("a Neon pooled host: the client programs connect to the direct host, said once, every setting kept", function()
  local pooled = string.format("postgresql://%s@ep-cool-dawn-123456-pooler.us-east-2.aws.neon.tech:%d/%s"
    .. "?hostaddr=127.0.0.1&sslmode=disable&application_name=vault", PG.user, math.tointeger(PG.port), DB)
  local release = children.lock_table(DB, "t")
  local handle, output = children.pgvault({ "-e", [[
    local dump, stream = require "pgvault.dump", require "pgvault.stream"
    local url = os.getenv("PGV_URL")
    assert(dump.conninfo(url):find("-pooler", 1, true), "dump.conninfo leaves the host alone")
    stream.run { dump.pg_dump { db = url }, stream.discard() }
    stream.run { stream.string("SELECT 1;"), dump.psql { db = url } }]] },
    { PGV_URL = pooled, PGPASSWORD = PG.password })
  local pid = children.find(handle:pid(), "pg_dump", "dbname=")
  local cmdline = pid and children.cmdline(pid) or ""
  release()
  local code = handle:wait(60)
  handle:close()
  local _, stderr = output()
  t.eq(code, 0, stderr)
  t.match(cmdline, "host='ep%-cool%-dawn%-123456%.us%-east%-2%.aws%.neon%.tech'")
  t.no_match(cmdline, "%-pooler")
  for _, kept in ipairs({ "hostaddr='127.0.0.1'", "sslmode='disable'", "application_name='vault'",
    "dbname='" .. DB .. "'", "user='" .. PG.user .. "'" }) do
    t.ok(cmdline:find(kept, 1, true), kept .. " kept: " .. cmdline)
  end
  local _, warnings = stderr:gsub("connects to Neon's direct host ep%-cool%-dawn%-123456%.us%-east%-2%.aws%.neon%.tech "
    .. "instead of the pooled ep%-cool%-dawn%-123456%-pooler%.us%-east%-2%.aws%.neon%.tech", "")
  t.eq(warnings, 1, "one warning for the run: " .. stderr)
end)

t.test("pg_dumpall is a source too: the roles, as --globals-only gives them", function()
  t.eq(dump.find_bin { program = "pg_dumpall", server_version = 150018 }.major, 15)
  local r = stream.run { dump.pg_dumpall { db = url, args = { "--globals-only", "--no-role-passwords" } },
    stream.buffer() }
  t.eq(r.pg_dumpall.exit_status, 0)
  t.match(r.buffer.data, "CREATE ROLE " .. PG.user .. ";")
  t.no_match(r.buffer.data, "CREATE TABLE", "globals only")
  t.raises(function() dump.pg_dumpall { db = url, server_version = 170000 } end, "postgresql%-client%-17")
  t.raises(function() dump.pg_dumpall { db = url, compress = 3 } end, "unknown option 'compress'",
    "pg_dump's options are not pg_dumpall's")
end)
