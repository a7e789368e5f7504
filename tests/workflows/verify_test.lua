-- covers: scripts/verify.lua scripts/lib/drill.lua scripts/lib/layers.lua scripts/lib/manifest.lua
-- pgvault verify: whole archives pass, --list is pg_restore --list byte for
-- byte, damaged or incomplete archives fail with one line naming the entry
-- and the byte, a manifest beside the archive is checked, layers are
-- recognised by their magic bytes.
local t = require "harness.testing"
local h = require "harness.env"
local fx = require "fixtures.pgdmp"
local cjson = require "cjson"
local fs = require "pgvault.fs"
local stream = require "pgvault.stream"
local layers = require "lib.layers"

local dir = h.tmpdir()
local url
local function db()
  if not url then url = fx.sample_db("verify_test", 3000) end
  return url
end

local cache = {}
local function dump(name, args, pipe)
  if not cache[name] then cache[name] = fx.pg_dump(db(), dir .. "/" .. name .. ".dump", args, pipe) end
  return cache[name]
end

local function verify(args)
  return h.pgvault(args, { timeout = 120 })
end

local function sha256_of(path)
  return stream.run { stream.file_reader(path), stream.sha256(), stream.discard() }.sha256.sha256
end

t.test("a whole archive verifies, with per-table rows", function()
  local r = verify({ "verify", dump("default", {}) })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "archive 1%.14 %(gzip%), %d+ TOC entries, 3 tables, 3003 rows, 2 large objects")
  t.match(r.stdout, "public%.t1%s+3000 rows")
  -- only lib.trust's warning: no manifest, so nothing proved who made it
  t.match(r.stderr, "^pgvault: warning: [^\n]*has no manifest: nothing about it was checked[^\n]*\n$")
end)

t.test("--list prints exactly what pg_restore --list prints", function()
  local cases = {
    { "default", {} }, { "pipe", {}, true }, { "z0", { "-Z0" } }, { "z5", { "-Z5" } },
    { "data_only", { "-a" } }, { "schema_only", { "-s" } }, { "z0_pipe", { "-Z0" }, true },
  }
  for _, c in ipairs(cases) do
    local path = dump(c[1], c[2], c[3])
    local want = fx.pg_restore_list(path)
    local r = verify({ "verify", "--list", path })
    t.eq(r.code, 0, c[1] .. ": " .. r.stderr)
    t.eq(r.stdout, want, c[1])
  end
  for _, v in ipairs({ 12, 13 }) do
    local path = fx.gen(dir .. "/gen" .. v, v, "gzip", "rows=100")
    t.eq(verify({ "verify", "--list", path }).stdout, fx.pg_restore_list(path), "generated 1." .. v)
  end
end)

t.test("--json carries the summary", function()
  local r = verify({ "verify", "--json", dump("pipe", {}, true) })
  t.eq(r.code, 0, r.stderr)
  local j = cjson.decode(r.stdout)
  t.eq(j.ok, true)
  t.eq(j.archive.totals.rows, 3003)
  t.eq(j.archive.offsets, false)
  t.eq(j.layers, { "pgdmp" })
  t.eq(j.archive.list, nil)
end)

t.test("a truncated archive fails with one line naming the entry and the byte", function()
  local data = fs.read_file(dump("z0", { "-Z0" }))
  local path = dir .. "/cut.dump"
  fs.write_file(path, data:sub(1, #data - 2000))
  local _, code = fx.pg_restore_list(path)
  t.eq(code, 0, "pg_restore --list does not notice")
  local r = verify({ "verify", path })
  t.eq(r.code, 1)
  -- lib.trust's warning first
  local rest = r.stderr:gsub("pgvault: warning: [^\n]*nothing proves it came from your backup job[^\n]*\n", "")
  t.match(rest, "^pgvault: verify: " .. path:gsub("%p", "%%%0") ..
    ": archive truncated at byte %d+, entry %d+ %(TABLE DATA public%.t1%)")
  t.eq(select(2, rest:gsub("\n", "")), 1, "one line")
  local l = verify({ "verify", "--list", path })
  t.eq(l.code, 1)
  t.eq(l.stdout, fx.pg_restore_list(path), "the TOC is still listed")
end)

local function write_manifest(path, m)
  fs.write_file(path .. ".manifest.json", cjson.encode(m))
end

local function good_manifest(path)
  local size = fs.stat(path).size
  local sha = sha256_of(path)
  return {
    format = 1,
    stored = { name = path:match("[^/]+$"), bytes = size, sha256 = sha },
    plain = { bytes = size, sha256 = sha },
    tables = { { schema = "public", name = "t1", rows = 3000 }, { schema = "public", name = "empty", rows = 0 } },
  }
end

t.test("a manifest beside the archive must match: sizes, SHA-256, rows", function()
  local path = dir .. "/m.dump"
  fs.write_file(path, fs.read_file(dump("z0", { "-Z0" })))
  write_manifest(path, good_manifest(path))
  local r = verify({ "verify", path })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "matches .*m%.dump%.manifest%.json")

  local m = good_manifest(path)
  m.tables[1].rows = 2999
  write_manifest(path, m)
  r = verify({ "verify", path })
  t.eq(r.code, 1)
  t.match(r.stderr, "rows of public%.t1: the manifest says 2999, the backup has 3000")

  -- damage inside a row's text: no structure changes, the digest catches it
  local data = fs.read_file(path)
  local good = good_manifest(path)
  write_manifest(path, good)
  local s = require("pgvault.archive").read(path)
  local t1
  for _, tb in ipairs(s.tables) do if tb.name == "t1" then t1 = tb end end
  local at = t1.offset + 200
  local b = data:byte(at + 1)
  fs.write_file(path, data:sub(1, at) .. string.char(b == 0x61 and 0x62 or 0x61) .. data:sub(at + 2))
  r = verify({ "verify", path })
  t.eq(r.code, 1)
  t.match(r.stderr, "SHA%-256: the manifest says " .. good.stored.sha256)
  r = verify({ "verify", "--no-manifest", path })
  t.eq(r.code, 0, "without the manifest, text damage inside a row is invisible")
end)

t.test("layers are recognised by their magic bytes", function()
  t.eq(layers.detect("PGDMP\1\14", "x"), { "pgdmp" })
  t.eq(layers.detect("\x28\xB5\x2F\xFDxx", "x.backup.zst"), { "zstd", "pgdmp" })
  t.eq(layers.detect("age-encryption.org/v1\n-> X25519", "a.backup.zst.age"), { "age", "zstd", "pgdmp" })
  t.eq(layers.detect("-----BEGIN AGE ENCRYPTED FILE-----\n", "a.backup.age"), { "age", "pgdmp" })
  t.eq(layers.detect("hello", "x"), nil)
  local path = dir .. "/plain.zst"
  local z = h.run({ "zstd", "-q", "-f", dump("default", {}), "-o", path })
  t.eq(z.code, 0, z.stderr)
  local r = verify({ "verify", path })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "3003 rows")
end)

t.test("age and zstd layers are peeled as the bytes stream, and checked against the manifest", function()
  local crypto = require "pgvault.crypto"
  local kg = crypto.keygen()
  local key = dir .. "/key.txt"
  kg.identity:save(key)
  local src = dump("default", {})
  local path = dir .. "/x.backup.zst.age"
  local r = stream.run { stream.file_reader(src), stream.sha256 { label = "plain" }, stream.zstd { level = 3 },
    crypto.encryptor { recipients = { kg.recipient } }, stream.sha256 { label = "stored" },
    stream.file_writer(path) }
  local v = verify({ "verify", "-i", key, "--json", path })
  t.eq(v.code, 0, v.stderr)
  local j = cjson.decode(v.stdout)
  t.eq(j.layers, { "age", "zstd", "pgdmp" })
  t.eq(j.archive.totals.rows, 3003)
  t.eq(j.plain.sha256, r.plain.sha256, "the plain archive's digest")
  t.eq(j.stored.sha256, r.stored.sha256, "the stored file's digest")
  write_manifest(path, { format = 1, stored = { bytes = r.stored.bytes, sha256 = r.stored.sha256 },
    plain = { bytes = r.plain.bytes, sha256 = r.plain.sha256 },
    tables = { { schema = "public", name = "t1", rows = 3000 } } })
  v = verify({ "verify", "-i", key, path })
  t.eq(v.code, 0, v.stderr)
  t.match(v.stdout, "matches")
  v = verify({ "verify", path })
  t.eq(v.code, 2, "no identity")
  t.match(v.stderr, "give the identity file that opens it with %-i FILE")
  local other = dir .. "/other.txt"
  crypto.keygen().identity:save(other)
  v = verify({ "verify", "-i", other, path })
  t.eq(v.code, 1, "wrong identity")
  t.match(v.stderr, "no identity matched")
  -- a truncated encrypted backup fails in the age layer
  local data = fs.read_file(path)
  local cut = dir .. "/cut.backup.zst.age"
  fs.write_file(cut, data:sub(1, #data - 100))
  v = verify({ "verify", "-i", key, cut })
  t.eq(v.code, 1)
  t.match(v.stderr, "truncated")
end)

t.test("backup runs the verifier tap: the manifest records the tables, verify checks against it", function()
  local out = dir .. "/backups"
  local r = h.pgvault({ "backup", "--db", db(), "--to", out }, { timeout = 120 })
  t.eq(r.code, 0, r.stderr)
  local path = r.stdout:match("([^\n]+)\n$")
  local m = cjson.decode(fs.read_file(path .. ".manifest.json"))
  t.eq(m.archive.complete, true)
  t.eq(m.archive.totals.rows, 3003)
  local rows = {}
  for _, tb in ipairs(m.tables) do rows[tb.schema .. "." .. tb.name] = tb.rows end
  t.eq(rows["public.t1"], 3000)
  t.eq(rows["s2.we\nird"], 3)
  local v = verify({ "verify", path })
  t.eq(v.code, 0, v.stderr)
  t.match(v.stdout, "matches")
end)

t.test("a malformed dump is never committed by backup", function()
  -- a pg_dump that exits 0 after writing a cut-off archive
  local bin = dir .. "/fakebin"
  fs.mkdir_p(bin)
  local real = dump("default", {})
  fs.write_file(bin .. "/pg_dump", "#!/bin/sh\n" ..
    "if [ \"$1\" = --version ]; then echo 'pg_dump (PostgreSQL) 15.18'; exit 0; fi\n" ..
    "head -c 3000 '" .. real .. "'\n", { mode = 493 })
  local out = dir .. "/bad_backups"
  local r = h.pgvault({ "backup", "--db", db(), "--to", out, "--pg-bin", bin, "--compress", "none" },
    { timeout = 120 })
  t.eq(r.code, 1, r.stdout)
  t.match(r.stderr, "archive truncated at byte 3000")
  local left = fs.exists(out) and fs.listdir(out) or {}
  t.eq(#left, 0, "no archive, no partial file, no manifest")
end)

t.test("--restore-into restores into a scratch database, compares row counts and drops it", function()
  local scratch = h.pg().url("verify_drill")
  h.dropdb("verify_drill")
  local r = verify({ "verify", "--restore-into", scratch, dump("default", {}) })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "restored into verify_drill %(dropped again%): row counts of 3 tables checked")
  local left = h.psql(h.pg().admin_url("postgres"), "SELECT count(*) FROM pg_database WHERE datname = 'verify_drill';")
  t.eq(left, "0\n", "the scratch database is gone")
  -- an existing database is never used (nor dropped)
  local kept = h.createdb("verify_drill")
  r = verify({ "verify", "--restore-into", kept, dump("default", {}) })
  t.eq(r.code, 1)
  t.match(r.stderr, "already exists")
  t.eq(h.psql(h.pg().admin_url("postgres"), "SELECT count(*) FROM pg_database WHERE datname = 'verify_drill';"),
    "1\n")
  h.dropdb("verify_drill")
end)

t.test("bad input: not an archive, missing file, directory, s3, unsupported options", function()
  local junk = dir .. "/junk"
  fs.write_file(junk, "just some text\n")
  local r = verify({ "verify", junk })
  t.eq(r.code, 1)
  t.match(r.stderr, "is not a backup: its first bytes are none of a pg_dump custom%-format archive")
  r = verify({ "verify", dir .. "/nope" })
  t.eq(r.code, 1)
  t.match(r.stderr, "no such file")
  r = verify({ "verify", dir })
  t.eq(r.code, 1)
  t.match(r.stderr, "directory")
  r = verify({ "verify", "s3://bucket/prefix/" }) -- the object cases are in verify_s3_test.lua
  t.eq(r.code, 2)
  t.match(r.stderr, "name one backup: s3://BUCKET/PREFIX/NAME")
  r = verify({ "verify" })
  t.eq(r.code, 2)
  -- regression test: --database with a named backup was parsed and ignored
  r = verify({ "verify", junk, "--database", "app" })
  t.eq(r.code, 2)
  t.match(r.stderr, "%-%-database chooses among backups: use it with DIR/latest")
  local empty = dir .. "/empty"
  fs.write_file(empty, "")
  r = verify({ "verify", empty })
  t.eq(r.code, 1)
end)
