-- covers: bindings/pg.c bindings/pg/
-- pgvault.pg against the harness cluster: typed values, parameters, NULLs,
-- commands and scripts, errors with their SQLSTATE, failed connections
-- (wrong password, unreachable host, missing database), notices and the
-- collation WARNING sent during start-up, cancel on SIGINT, libpq's
-- environment, .pgpass and service files, and no password anywhere.
local t = require "harness.testing"
local h = require "harness.env"
local pg = require "pgvault.pg"
local pgvault = require "pgvault"
local proc = require "pgvault.proc"
local fs = require "pgvault.fs"

local DB = "pg_binding_test"
local url = h.createdb(DB)
local PG = h.pg()
local PORT = math.tointeger(PG.port)

local function connect()
  return pg.connect(url)
end

-- Runs a Lua chunk in a child pgvault with the URL in the environment
-- (never on its command line).
local function child(code, env)
  local e = { PGV_URL = url }
  for k, v in pairs(env or {}) do e[k] = v end
  return h.pgvault({ "-e", code }, { env = e, timeout = 60 })
end

t.test("typed values and column order", function()
  local c <close> = connect()
  local rows, cols = c:query([[
    SELECT 1::int2 AS a, 2147483647::int4 AS b, 9007199254740993::int8 AS c, 1.5::float8 AS d,
           'NaN'::float8 AS nan, '-Infinity'::float4 AS ninf, true AS yes, false AS no,
           12.50::numeric AS num, 'héllo wörld'::text AS txt, NULL::int AS nothing,
           '{"k": [1, 2]}'::jsonb AS js, 'pg_class'::regclass::oid AS o, E'a\\000b'::bytea AS bin,
           '2024-01-02 03:04:05+00'::timestamptz AS ts]])
  t.eq(#rows, 1)
  t.eq(cols, { "a", "b", "c", "d", "nan", "ninf", "yes", "no", "num", "txt", "nothing", "js", "o", "bin", "ts" })
  local r = rows[1]
  t.eq(math.type(r.a), "integer")
  t.eq(r.a, 1)
  t.eq(r.b, 2147483647)
  t.eq(r.c, 9007199254740993, "int8 beyond 2^53 is exact")
  t.eq(math.type(r.d), "float")
  t.eq(r.d, 1.5)
  t.ok(r.nan ~= r.nan, "NaN")
  t.eq(r.ninf, -math.huge)
  t.eq(r.yes, true)
  t.eq(r.no, false)
  t.eq(r.num, "12.50", "numeric stays a string")
  t.eq(r.txt, "héllo wörld")
  t.ok(r.nothing == pg.null, "NULL is the sentinel")
  t.eq(tostring(pg.null), "pg.null")
  t.eq(r.js, '{"k": [1, 2]}')
  t.eq(r.o, 1259)
  t.eq(r.bin, "\\x610062")
  t.match(r.ts, "^2024%-01%-02")
end)

t.test("many rows, empty results, duplicate-free column names", function()
  local c <close> = connect()
  local rows = c:query("SELECT g AS n, repeat('x', g) AS s FROM generate_series(1, 5000) g")
  t.eq(#rows, 5000)
  t.eq(rows[5000].n, 5000)
  t.eq(#rows[5000].s, 5000)
  t.eq(collectgarbage("isrunning"), true, "the collector runs again after the conversion")
  collectgarbage("stop")
  c:query("SELECT 1")
  t.eq(collectgarbage("isrunning"), false, "a stopped collector stays stopped")
  collectgarbage("restart")
  local none, cols = c:query("SELECT 1 AS one WHERE false")
  t.eq(#none, 0)
  t.eq(cols, { "one" })
end)

t.test("parameters: text, numbers, booleans, NULLs, no injection", function()
  local c <close> = connect()
  local r = c:query("SELECT $1::int + 1 AS i, $2::float8 * 2 AS f, $3::text AS s, $4::bool AS b, " ..
    "$5::int IS NULL AS n5, $6::text IS NULL AS n6, $7::int AS last", 41, 1.25, "it's; DROP TABLE x; --",
    true, nil, pg.null, 7)[1]
  t.eq(r.i, 42)
  t.eq(r.f, 2.5)
  t.eq(r.s, "it's; DROP TABLE x; --")
  t.eq(r.b, true)
  t.eq(r.n5, true, "nil in the middle is NULL")
  t.eq(r.n6, true, "pg.null is NULL")
  t.eq(r.last, 7)
  local big = c:query("SELECT $1::int8 AS v, $2::float8 AS inf, $3::numeric AS num", math.maxinteger, math.huge,
    "123456789012345678901234567890.5")[1]
  t.eq(big.v, math.maxinteger)
  t.eq(big.inf, math.huge)
  t.eq(big.num, "123456789012345678901234567890.5")
  t.raises(function() c:query("SELECT $1", {}) end, "cannot pass a table")
  t.raises(function() c:query("SELECT $1", "a\0b") end, "zero byte")
  t.eq(c:query("SELECT 1 AS ok")[1].ok, 1, "still usable after misuse")
end)

t.test("exec: commands, rows affected, scripts, parameters", function()
  local c <close> = connect()
  local tag, n = c:exec([[
    DROP TABLE IF EXISTS items;
    CREATE TABLE items (id int PRIMARY KEY, name text UNIQUE, price numeric);
    INSERT INTO items VALUES (1, 'a', 1.5), (2, 'b', NULL), (3, 'c', 3)]])
  t.eq(tag, "INSERT 0 3", "the last statement's tag")
  t.eq(n, 3)
  tag, n = c:exec("UPDATE items SET price = price * 2 WHERE price IS NOT NULL")
  t.eq(tag, "UPDATE 2")
  t.eq(n, 2)
  tag, n = c:exec("DELETE FROM items WHERE id = $1", 3)
  t.eq(tag, "DELETE 1")
  t.eq(n, 1)
  tag, n = c:exec("CREATE INDEX ON items (price)")
  t.eq(tag, "CREATE INDEX")
  t.eq(n, nil, "no row count for DDL")
  local rows = c:query("SELECT id, price FROM items ORDER BY id")
  t.eq(#rows, 2)
  t.eq(rows[1].price, "3.0")
  t.ok(rows[2].price == pg.null)
  t.raises(function() c:exec("COPY items TO STDOUT") end, "COPY")
  t.eq(c:query("SELECT count(*) AS n FROM items")[1].n, 2, "usable after a refused COPY")
end)

t.test("errors carry sqlstate, severity, detail, hint and position", function()
  local c <close> = connect()
  local e = t.raises(function() c:query("SELECT * FROM no_such_table") end, "no_such_table")
  t.eq(e.kind, "pg")
  t.eq(e.sqlstate, "42P01")
  t.eq(e.severity, "ERROR")
  t.eq(e.position, 15)
  t.match(tostring(e), "SQLSTATE 42P01")
  e = t.raises(function() c:exec("SELEC 1") end)
  t.eq(e.sqlstate, "42601")
  c:exec("DROP TABLE IF EXISTS u; CREATE TABLE u (k text PRIMARY KEY)")
  c:exec("INSERT INTO u VALUES ('dup')")
  e = t.raises(function() c:exec("INSERT INTO u VALUES ('dup')") end)
  t.eq(e.sqlstate, "23505")
  t.eq(e.detail, "Key (k)=(dup) already exists.")
  t.eq(e.constraint, "u_pkey")
  t.eq(e.table, "u")
  t.match(e.message, "already exists", "the detail is part of the message")
  e = t.raises(function() c:exec("DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = 'P0001', " ..
    "DETAIL = 'the detail', HINT = 'the hint'; END $$") end, "boom")
  t.eq(e.detail, "the detail")
  t.eq(e.hint, "the hint")
  t.eq(e.sqlstate, "P0001")
  -- A failed statement inside a transaction, then rollback: the connection stays good.
  c:exec("BEGIN")
  t.raises(function() c:exec("SELECT 1/0") end, "division by zero")
  e = t.raises(function() c:query("SELECT 1") end)
  t.eq(e.sqlstate, "25P02", "aborted transaction")
  c:exec("ROLLBACK")
  t.eq(c:query("SELECT 2 AS two")[1].two, 2)
  e = t.raises(function() c:query("SELECT 1; SELECT 2") end)
  t.eq(e.sqlstate, "42601", "query takes a single statement")
end)

t.test("a connection the server drops is a clear error, and the handle stays safe to use", function()
  local c <close> = connect()
  local pid = c:info().backend_pid
  h.psql(PG.admin_url("postgres"), string.format("SELECT pg_terminate_backend(%d);", pid))
  local e = t.raises(function() c:query("SELECT 1") end)
  t.eq(e.kind, "pg")
  t.eq(e.connection_lost, true)
  t.match(e.message, "lost the connection to " .. PG.user .. "@127.0.0.1")
  e = t.raises(function() c:exec("SELECT 1") end)
  t.eq(e.kind, "pg")
  c:close()
end)

t.test("wrong password: one clear error naming host, port, database and user, no password", function()
  local bad = string.format("postgresql://%s:%s@127.0.0.1:%d/%s", PG.user, "Wr0ngPassw0rd", PORT, DB)
  local e = t.raises(function() pg.connect(bad) end)
  t.eq(e.kind, "pg")
  t.eq(e.sqlstate, "28P01")
  t.eq(e.user, PG.user)
  t.eq(e.port, string.format("%d", PORT))
  t.eq(e.host, "127.0.0.1")
  t.eq(e.database, DB)
  t.match(e.message, "password authentication failed")
  t.match(e.message, "check the password")
  t.no_match(tostring(e), "Wr0ngPassw0rd")
  t.no_match(e.message, "\n", "one line")
  -- And through the CLI: exit 1, one line, no password.
  local r = child("require('pgvault.pg').connect(os.getenv('BAD'))", { BAD = bad })
  t.eq(r.code, 1)
  t.match(r.stderr, "^pgvault: %-e: cannot connect to database " .. DB)
  t.no_match(r.stderr, "Wr0ngPassw0rd")
  t.eq(select(2, r.stderr:gsub("\n", "")), 1, "one line: " .. r.stderr)
end)

t.test("unreachable host and port", function()
  -- A port nobody listens on: refused at once.
  local e = t.raises(function() pg.connect("postgresql://u:SecretPw1@127.0.0.1:1/x") end, "Connection refused")
  t.eq(e.host, "127.0.0.1")
  t.eq(e.port, "1")
  t.match(e.message, "check the host and port")
  t.no_match(tostring(e), "SecretPw1")
  -- An address that never answers: our own deadline (connect_timeout) ends it.
  local t0 = proc.now()
  e = t.raises(function() pg.connect("host=10.255.255.1 port=5432 dbname=x user=u connect_timeout=2") end)
  t.ok(proc.now() - t0 < 15, "gave up near connect_timeout")
  t.eq(e.host, "10.255.255.1")
  t.match(e.message, "cannot connect to database x as user u on 10.255.255.1 port 5432")
  local r = child("require('pgvault.pg').connect('postgresql://nosuchhost.invalid/x')")
  t.eq(r.code, 1)
  t.match(r.stderr, "could not translate host name")
end)

t.test("a server that accepts but never answers: connect_timeout ends the wait, so does SIGINT", function()
  -- A TCP listener that says nothing: libpq's start-up waits for a reply.
  local silent = proc.spawn({ "node", "-e", "require('net').createServer(() => {}).listen(0, '127.0.0.1', "
    .. "function () { console.log(this.address().port) })", stdout = "pipe", stderr = "inherit" })
  local ok, err = pcall(function()
    local port = tonumber(silent:read_line(20))
    t.ok(port, "listener port")
    local info = string.format("host=127.0.0.1 port=%d dbname=x user=u connect_timeout=2", port)
    local t0 = proc.now()
    local e = t.raises(function() pg.connect(info) end, "timeout expired")
    t.ok(proc.now() - t0 >= 1.9 and proc.now() - t0 < 10, "about connect_timeout")
    t.match(e.message, "port " .. port)

    local p = proc.spawn({ h.bin, "-e", "io.stdout:write('go\\n'); io.stdout:flush(); "
      .. "require('pgvault.pg').connect(os.getenv('I'))", env = { I = (info:gsub("connect_timeout=2", "")) },
      stdout = "pipe", stderr = "pipe" })
    t.eq(p:read_line(10), "go")
    proc.sleep(0.5)
    p:kill("INT")
    t.eq(p:wait(10), 130, "interrupted while connecting")
    p:close()
  end)
  silent:close()
  if not ok then error(err, 0) end
end)

t.test("missing database and role", function()
  local e = t.raises(function() pg.connect(PG.url("no_such_db")) end, "does not exist")
  t.eq(e.sqlstate, "3D000")
  t.match(e.message, "check the database name")
  t.eq(e.database, "no_such_db")
  e = t.raises(function() pg.connect((PG.admin_url("postgres"):gsub("user=postgres", "user=no_such_role"))) end)
  t.eq(e.sqlstate, "28000")
  t.match(e.message, 'role "no_such_role" does not exist')
end)

t.test("a malformed URL is one clear error", function()
  local e = t.raises(function() pg.connect("postgresql://u:pw@h:5432/db?bogus=1") end,
    "^invalid connection string: invalid URI query parameter: \"bogus\"")
  t.eq(e.kind, "usage")
  e = t.raises(function() pg.connect("postgresql://u:pw@h:notaport/db") end,
    "cannot connect to database db as user u on h port notaport: invalid integer value \"notaport\"")
  t.eq(e.kind, "pg")
  t.match(e.message, "check the connection settings")
end)

t.test("notices are collected with their fields and forwarded to the log", function()
  local c <close> = connect()
  t.eq(#c:notices(), 0)
  c:exec([[DO $$ BEGIN
    RAISE NOTICE 'hello %', 42;
    RAISE WARNING 'careful' USING DETAIL = 'some detail', HINT = 'some hint', ERRCODE = '01000';
  END $$]])
  local n = c:notices()
  t.eq(#n, 2)
  t.eq(n[1], { severity = "NOTICE", sqlstate = "00000", message = "hello 42", text = "hello 42" })
  t.eq(n[2], { severity = "WARNING", sqlstate = "01000", message = "careful", detail = "some detail",
    hint = "some hint", text = "careful. some detail Hint: some hint" })
  c:clear_notices()
  t.eq(#c:notices(), 0)
  local r = child([[
    local c = require('pgvault.pg').connect(os.getenv('PGV_URL'))
    c:exec("DO $$ BEGIN RAISE WARNING 'from the server'; END $$")
    c:close()]])
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "^pgvault: warning: server WARNING on database " .. DB .. ": from the server\n$")
  -- With log_notices = false they are only collected (and logged at debug level).
  local code = [[
    local c = require('pgvault.pg').connect(os.getenv('PGV_URL'), { log_notices = false })
    c:exec("DO $$ BEGIN RAISE WARNING 'kept quiet'; END $$")
    io.stdout:write(c:notices()[1].message)]]
  r = child(code)
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, "kept quiet")
  t.eq(r.stderr, "")
  r = h.pgvault({ "-v", "-e", code }, { env = { PGV_URL = url } })
  t.match(r.stderr, "pgvault: debug: server WARNING on database " .. DB .. ": kept quiet")
  t.raises(function() pg.connect(url, "x") end, "table expected")
  t.raises(function() pg.connect(url, { log_notice = false }) end, "unknown option 'log_notice'",
    "a misspelt option is an error, not ignored")
end)

t.test("the collation WARNING of start-up is captured as a notice, never printed raw", function()
  local name = "pg_binding_coll"
  local curl = h.createdb(name)
  h.psql(PG.admin_url("postgres"), "UPDATE pg_database SET datcollversion = '0.1' WHERE datname = '" .. name .. "';")
  local c <close> = pg.connect(curl)
  local n = c:notices()
  t.eq(#n, 1, "one notice at start-up")
  t.eq(n[1].severity, "WARNING")
  t.eq(n[1].sqlstate, "01000")
  t.eq(n[1].message, 'database "' .. name .. '" has a collation version mismatch')
  t.match(n[1].detail, "collation version 0%.1, but the operating system provides version")
  t.match(n[1].hint, "REFRESH COLLATION VERSION")
  local r = child("require('pgvault.pg').connect(os.getenv('C')):close()", { C = curl })
  t.eq(r.code, 0)
  t.match(r.stderr, "^pgvault: warning: server WARNING on database " .. name ..
    ": database \"" .. name .. "\" has a collation version mismatch%. The database was created using " ..
    "collation version 0%.1, but the operating system provides version [%d.]+%. Hint: Rebuild all objects")
  t.eq(n[1].text, n[1].message .. ". " .. n[1].detail .. " Hint: " .. n[1].hint, "the sentences kept")
  t.no_match(r.stderr, "\nWARNING:", "libpq's own printing is replaced")
  t.eq(select(2, r.stderr:gsub("\n", "")), 1, "one log line")
  c:close()
  h.dropdb(name)
end)

local function backend_state(pid)
  local out = h.psql(PG.admin_url("postgres"),
    string.format("SELECT coalesce(state, '') || '|' || query FROM pg_stat_activity WHERE pid = %d;", pid))
  return out:gsub("\n$", "")
end

for _, sig in ipairs({ "INT", "TERM" }) do
  t.test("SIG" .. sig .. " cancels a long query: exit 130, promptly, the backend stops", function()
    local p = proc.spawn({ h.bin, "-e", [[
      local c = require('pgvault.pg').connect(os.getenv('PGV_URL'))
      io.stdout:write(c:info().backend_pid, "\n"); io.stdout:flush()
      c:query("SELECT pg_sleep(30)")]], env = { PGV_URL = url }, stdout = "pipe", stderr = "pipe" })
    local pid = tonumber(p:read_line(20))
    t.ok(pid, "backend pid")
    local deadline = proc.now() + 20
    while not backend_state(pid):find("^active|SELECT pg_sleep") and proc.now() < deadline do
      proc.sleep(0.05)
    end
    t.match(backend_state(pid), "^active|SELECT pg_sleep", "the query runs")
    local t0 = proc.now()
    p:kill(sig)
    local code = p:wait(20)
    t.eq(code, 130, "exit code")
    t.ok(proc.now() - t0 < 10, "stopped promptly, not after 30 s")
    deadline = proc.now() + 10
    while backend_state(pid):find("^active") and proc.now() < deadline do proc.sleep(0.05) end
    t.no_match(backend_state(pid), "^active", "the server stopped the query")
    p:close()
  end)
end

t.test("libpq environment variables, .pgpass and service files are honoured", function()
  local d = h.tmpdir()
  local code = [[
    local c = require('pgvault.pg').connect(os.getenv('CI_STR') or '')
    io.stdout:write(c:db(), " ", c:query("SELECT current_user AS u")[1].u, "\n")]]
  local env = { PGHOST = "127.0.0.1", PGPORT = string.format("%d", PORT), PGUSER = PG.user, PGPASSWORD = PG.password,
    PGDATABASE = DB }
  local r = child(code, env)
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, DB .. " " .. PG.user .. "\n", "environment")

  local passfile = d .. "/pgpass"
  fs.write_file(passfile, string.format("127.0.0.1:%d:*:%s:%s\n", PORT, PG.user, PG.password), { mode = 384 })
  r = child(code, { PGPASSFILE = passfile, CI_STR = string.format("postgresql://%s@127.0.0.1:%d/%s", PG.user,
    PORT, DB) })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, DB .. " " .. PG.user .. "\n", ".pgpass")

  local svc = d .. "/pg_service.conf"
  fs.write_file(svc, string.format("[vault]\nhost=127.0.0.1\nport=%d\nuser=%s\ndbname=%s\n", PORT, PG.user, DB))
  r = child(code, { PGSERVICEFILE = svc, PGPASSFILE = passfile, CI_STR = "service=vault" })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, DB .. " " .. PG.user .. "\n", "service file")

  r = child(code, { PGPASSFILE = "/nonexistent", PGPASSWORD = false, CI_STR = string.format(
    "postgresql://%s@127.0.0.1:%d/%s", PG.user, PORT, DB) })
  t.eq(r.code, 1)
  t.match(r.stderr, "no password supplied.*supply a password")
end)

t.test("handles: tostring without password, close is idempotent, closed handles refuse use", function()
  local c = connect()
  local s = tostring(c)
  t.match(s, string.format("^pgvault.pg connection %s@127.0.0.1:%d/%s %%(open%%)$", PG.user, PORT, DB))
  t.no_match(s, PG.password)
  t.eq(c:server_version() // 10000, 15)
  t.eq(c:db(), DB)
  local info = c:info()
  t.eq(info.user, PG.user)
  t.ok(info.backend_pid > 0)
  c:close()
  c:close()
  t.match(tostring(c), "%(closed%)$")
  t.raises(function() c:query("SELECT 1") end, "closed")
  t.raises(function() c:exec("SELECT 1") end, "closed")
  do
    local scoped <close> = connect()
    t.ok(scoped:query("SELECT 1 AS x")[1].x == 1)
  end
  -- A password from the URL is registered as a secret: the log masks it.
  t.eq(pgvault.redact("it is " .. PG.password), "it is ***")
end)

t.test("quote_ident and quote_literal round-trip through the server", function()
  local c <close> = connect()
  for _, s in ipairs({ "plain", "it's", 'a "quoted" name', "back\\slash", "héllo", "" }) do
    t.eq(c:query("SELECT " .. pg.quote_literal(s) .. " AS v")[1].v, s, "literal " .. s)
    t.eq(c:query("SELECT " .. c:quote_literal(s) .. " AS v")[1].v, s, "conn literal " .. s)
    if s ~= "" then
      t.eq(c:query("SELECT 1 AS " .. pg.quote_ident(s))[1][s], 1, "ident " .. s)
      t.eq(pg.quote_ident(s), c:quote_ident(s), "same as PQescapeIdentifier")
    end
  end
  t.eq(pg.quote_ident('a"b'), '"a""b"')
  t.eq(pg.quote_literal("it's"), "'it''s'")
  t.raises(function() pg.quote_ident("a\0b") end, "zero byte")
end)

t.test("parse_conninfo reads URLs and key=value strings", function()
  t.eq(pg.parse_conninfo("postgresql://u:pw0rdX@h:5433/db?sslmode=require"),
    { user = "u", password = "pw0rdX", host = "h", port = "5433", dbname = "db", sslmode = "require" })
  t.eq(pg.parse_conninfo("host=h dbname=d"), { host = "h", dbname = "d" })
  local e = t.raises(function() pg.parse_conninfo("postgresql://h/db?bogus=1") end, "invalid connection string")
  t.eq(e.kind, "usage")
end)

t.test("parse_conninfo: a bare word is a database name, secrets are registered", function()
  t.eq(pg.parse_conninfo("shop"), { dbname = "shop" })
  t.eq(pg.parse_conninfo(""), {})
  t.eq(pg.parse_conninfo("host=h sslpassword=KeyPass99q").sslpassword, "KeyPass99q")
  t.eq(pgvault.redact("key KeyPass99q"), "key ***", "sslpassword is a secret too")
  local r = child("local c = require('pgvault.pg').connect(os.getenv('DBNAME')); io.write(c:db())",
    { DBNAME = DB, PGHOST = "127.0.0.1", PGPORT = string.format("%d", PORT), PGUSER = PG.user,
      PGPASSWORD = PG.password })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, DB, "pg.connect(NAME) connects to database NAME, as psql -d NAME does")
end)

t.test("direct_url: a Neon pooled host becomes the direct one, the rest as written", function()
  local neon = "postgresql://neondb_owner:npg_Secr3t@ep-cool-dawn-123456-pooler.us-east-2.aws.neon.tech/neondb"
    .. "?sslmode=require&channel_binding=require"
  local u, from, to = pg.direct_url(neon)
  t.eq(u, (neon:gsub("%-pooler", "")))
  t.eq(from, "ep-cool-dawn-123456-pooler.us-east-2.aws.neon.tech")
  t.eq(to, "ep-cool-dawn-123456.us-east-2.aws.neon.tech")
  t.eq(pg.parse_conninfo(u).channel_binding, "require")
  -- key=value strings, Azure regions, host lists
  t.eq(pg.direct_url("host=ep-a-1-pooler.eastus2.azure.neon.tech dbname=x"),
    "host=ep-a-1.eastus2.azure.neon.tech dbname=x")
  t.eq(pg.direct_url("postgresql://u@ep-a-1-pooler.c-2.us-east-1.aws.neon.tech,backup.example/x"),
    "postgresql://u@ep-a-1.c-2.us-east-1.aws.neon.tech,backup.example/x")
  -- not Neon's pooler: unchanged, nothing reported
  for _, other in ipairs({ "postgresql://u@ep-a-1.us-east-2.aws.neon.tech/x", "postgresql://u@my-pooler.example/x",
    "postgresql://u@ep-a-1-pooler.example.com/x", "host=/tmp dbname=x", "" }) do
    local same, f = pg.direct_url(other)
    t.eq(same, other)
    t.eq(f, nil)
  end
end)

t.test("in the REPL: pgvault.pg is preloaded, Ctrl-C cancels a query, the connection stays usable", function()
  local home = h.tmpdir()
  local sock = home .. "/tmux.sock"
  -- The password reaches the REPL through a passfile, never a command line.
  fs.write_file(home .. "/pgpass", string.format("127.0.0.1:%d:*:%s:%s\n", PORT, PG.user, PG.password),
    { mode = 384 })
  local function tmux(...) return h.run({ "tmux", "-S", sock, ... }, { timeout = 20 }) end
  local function type_line(text)
    tmux("send-keys", "-t", "repl", "-l", text)
    tmux("send-keys", "-t", "repl", "Enter")
  end
  local function wait_for(text)
    local deadline = proc.now() + 15
    local s
    repeat
      s = tmux("capture-pane", "-p", "-t", "repl").stdout
      if s:find(text, 1, true) then return s end
      proc.sleep(0.1)
    until proc.now() > deadline
    t.ok(false, "waited for " .. text .. ", screen:\n" .. s)
  end
  local ok, err = pcall(function()
    local r = tmux("new-session", "-d", "-s", "repl", "-x", "150", "-y", "30",
      string.format("env HOME=%s PGVAULT_HISTORY=%s/hist PGPASSFILE=%s/pgpass TERM=xterm %s", home, home, home, h.bin))
    t.eq(r.code, 0, r.stderr)
    wait_for("pgvault>")
    type_line("pg == pgvault.pg and pg.quote_ident('r x')")
    wait_for('\n"r x"') -- the REPL prints a string as print does
    type_line(string.format("c = pg.connect('postgresql://%s@127.0.0.1:%d/%s')", PG.user, PORT, DB))
    type_line("c:query('SELECT pg_sleep(30)')")
    proc.sleep(1)
    local t0 = proc.now()
    tmux("send-keys", "-t", "repl", "C-c")
    wait_for("interrupted")
    t.ok(proc.now() - t0 < 10, "cancelled promptly")
    type_line("c:query('SELECT 6 * 7 AS answer')[1].answer")
    wait_for("\n42")
  end)
  tmux("kill-server")
  if not ok then error(err, 0) end
end)
