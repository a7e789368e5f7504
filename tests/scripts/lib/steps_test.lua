-- covers: scripts/lib/backup.lua scripts/lib/restore.lua scripts/lib/verify.lua
-- The Lua entry points other workflows call (nightly, neon-restore,
-- collation-fix, the benchmarks): backup.run, verify.run, restore.run,
-- restore.load_into, and the steps themselves with a stage added.
local t = require "harness.testing"
local h = require "harness.env"
local fs = require "pgvault.fs"
local stream = require "pgvault.stream"
local backup = require "lib.backup"
local restore = require "lib.restore"
local verify = require "lib.verify"

local PG = h.pg()
local url = h.createdb("steps_source_test")
h.psql(url, "CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 1000) g;")

t.test("backup.run and verify.run", function()
  local d = h.tmpdir()
  local b = backup.run { db = url, to = d, suffix = "lua", time = 1767225600 }
  t.eq(b.path, d .. "/20260101000000_lua.backup.zst")
  t.eq(b.manifest_path, b.path .. ".manifest.json")
  t.eq(b.manifest.database, "steps_source_test")
  t.eq(b.result.stored.bytes, fs.stat(b.path).size)
  local v = verify.run { src = b.path }
  t.eq(v.matches, true)
  t.eq(v.archive.totals.rows, 1000)
  t.eq(#v.problems, 0)
  -- a manifest that does not match: kind verify, the result attached
  local text = h.read(b.manifest_path):gsub('"rows": 1000', '"rows": 999')
  fs.remove(b.manifest_path)
  h.write(b.manifest_path, text)
  local e = t.raises(function() verify.run { src = b.path } end, "rows of public%.t: the manifest says 999")
  t.eq(e.kind, "verify")
  t.eq(e.result.matches, false)
end)

t.test("the steps with a stage of one's own; a dropped compressor makes a plain .backup", function()
  local d = h.tmpdir()
  local job = backup.plan { db = url, to = d }
  local dest <close> = backup.destination(job)
  local r = backup.pipeline(job, dest, { backup.pg_dump(job), backup.digest("plain"), stream.counter { label = "mine" },
    backup.digest("stored"), dest:sink() })
  t.eq(r.mine.bytes, r.plain.bytes, "the added tap saw the archive")
  t.match(dest.path, "_local%.backup$", "no .zst without the compressor")
  local m = backup.manifest(job, dest, r)
  t.eq(m.compression.method, "none")
  dest:commit(m)
  t.eq(h.read(dest.path):sub(1, 5), "PGDMP")
  local e = t.raises(function()
    local dest2 <close> = backup.destination(job)
    backup.pipeline(job, dest2, { backup.pg_dump(job), dest2:sink(), backup.digest("x") })
  end, "the last stage of a backup must be dest:sink%(%)")
  t.eq(e.kind, "usage")
end)

t.test("restore.run and restore.load_into", function()
  local d = h.tmpdir()
  local b = backup.run { db = url, to = d }
  h.dropdb("steps_restored_test")
  local r = restore.run { src = b.path, db = PG.url("steps_restored_test") }
  t.eq(r.database, "steps_restored_test")
  t.eq(r.row_counts_checked, 1)
  t.eq(h.psql(PG.url("steps_restored_test"), "SELECT count(*) FROM t;"), "1000\n")
  h.dropdb("steps_into_test")
  h.psql(PG.admin_url("postgres"), "CREATE DATABASE steps_into_test OWNER " .. PG.user .. " TEMPLATE template0;")
  -- as restore.run: with trusted keys, an unsigned backup is refused before a byte is loaded
  -- (regression test: load_into checked no signature)
  local keys = h.tmpdir()
  assert(h.pgvault({ "keygen", "--sign", "-o", keys .. "/k.key" }).code == 0)
  t.raises(function()
    restore.load_into({ src = b.path, db = PG.url("steps_into_test"), trust = { keys .. "/k.key.pub" } },
      "steps_into_test")
  end, "is not signed")
  t.eq(h.psql(PG.url("steps_into_test"), "SELECT count(*) FROM pg_class WHERE relname = 't';"), "0\n", "nothing loaded")
  local into = restore.load_into({ src = b.path, db = PG.url("steps_into_test") }, "steps_into_test")
  t.eq(into.row_counts_checked, 1)
  t.eq(into.manifest.database, "steps_source_test")
  t.eq(h.psql(PG.url("steps_into_test"), "SELECT count(*) FROM t;"), "1000\n")
  h.dropdb("steps_restored_test")
  h.dropdb("steps_into_test")
end)
