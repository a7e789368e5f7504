-- covers: scripts/verify.lua scripts/lib/s3backups.lua
-- pgvault verify s3://…: a backup in the bucket (plain, zstd, age) streams
-- (no temporary file) through the same layer peeling into the archive
-- verifier and is compared with the manifest beside it; …/latest resolves
-- as restore does; a tampered, truncated or missing object fails with one
-- line.
local t = require "harness.testing"
local h = require "harness.env"
local cjson = require "cjson"
local s3 = require "pgvault.s3"
local s3h = require "harness.s3"

local direct = s3h.direct

local BUCKET = "verify-s3"
s3.create_bucket("s3://" .. BUCKET, direct())
local env = h.s3().env

-- A small database with a marker string in its data, so an uncompressed
-- archive can be altered without breaking its structure.
local db = h.createdb("verify_s3_source_test")
h.psql(db, [[CREATE TABLE t (id int PRIMARY KEY, note text);
  INSERT INTO t SELECT g, 'note ' || g FROM generate_series(1, 250) g;
  CREATE TABLE marker (s text); INSERT INTO marker VALUES ('pgvault-marker-ABCDEF');
  CREATE TABLE empty_one (x int);]])

local d = h.tmpdir()
t.eq(h.run({ "age-keygen", "-o", d .. "/key.txt" }).code, 0)
local pub = h.run({ "age-keygen", "-y", d .. "/key.txt" }).stdout:match("%S+")

local function last_line(s) return s:match("([^\n]*)\n?$") end

local function backup(suffix, extra)
  local args = { "backup", "--db", db, "--to", "s3://" .. BUCKET .. "/p/", "--suffix", suffix }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  local r = h.pgvault(args, { env = env })
  t.eq(r.code, 0, r.stderr)
  return last_line(r.stdout)
end

local urls = {
  plain = backup("plain", { "--compress", "none" }),
  zst = backup("zst"),
  age = backup("age", { "-r", pub }),
}

-- TMPDIR names a directory that does not exist: a temporary file would
-- fail the run, so every verify here also shows the object is streamed.
-- Under valgrind, which needs a TMPDIR of its own, it is an empty directory
-- instead (memory checking is what that run is for).
local no_tmp = h.valgrind and h.tmpdir() or d .. "/does-not-exist"
local function verify(args, extra_env)
  local e = { TMPDIR = no_tmp }
  for k, v in pairs(env) do e[k] = v end
  for k, v in pairs(extra_env or {}) do e[k] = v end
  local argv = { "verify" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return h.pgvault(argv, { env = e, timeout = 120 })
end

-- one line besides lib.trust's warning that nothing proved who made the backup
local TRUST_WARNING = "pgvault: warning: [^\n]*nothing proves it came from your backup job[^\n]*\n"
local function one_line(s)
  return (s:gsub(TRUST_WARNING, ""):gsub("\n$", "")):find("\n") == nil
end

t.test("a good backup in the bucket verifies: plain, zstd, age with -i", function()
  t.match(urls.plain, "_plain%.backup$")
  t.match(urls.zst, "_zst%.backup%.zst$")
  t.match(urls.age, "_age%.backup%.zst%.age$")
  for kind, url in pairs(urls) do
    local args = { url }
    if kind == "age" then args = { url, "-i", d .. "/key.txt" } end
    local r = verify(args)
    t.eq(r.code, 0, kind .. ": " .. r.stderr)
    t.match(r.stdout, "^" .. url:gsub("%p", "%%%0") .. ": archive 1%.%d+", kind)
    t.match(r.stdout, "public%.t%s+250 rows", kind)
    t.match(r.stdout, "public%.marker%s+1 rows", kind)
    t.match(r.stdout, "matches " .. (url .. ".manifest.json"):gsub("%p", "%%%0"), kind)
  end
  -- an encrypted backup without the identity: one clear line
  local r = verify({ urls.age })
  t.eq(r.code, 2, r.stderr)
  t.match(r.stderr, "give the identity file that opens it with %-i FILE")
  t.ok(one_line(r.stderr), r.stderr)
end)

t.test("--json and --list work on a bucket's object", function()
  local r = verify({ urls.zst, "--json" })
  t.eq(r.code, 0, r.stderr)
  local j = cjson.decode(r.stdout)
  t.eq(j.ok, true)
  t.eq(j.path, urls.zst)
  t.eq(table.concat(j.layers, ","), "zstd,pgdmp")
  t.eq(j.manifest, urls.zst .. ".manifest.json")
  local m = cjson.decode(s3.get(urls.zst .. ".manifest.json", direct()))
  t.eq(j.stored.sha256, m.stored.sha256)
  t.eq(j.stored.bytes, m.stored.bytes)
  t.eq(j.plain.sha256, m.plain.sha256)
  -- --list is what pg_restore --list prints for the same archive
  local file = d .. "/plain.backup"
  h.write(file, s3.get(urls.plain, direct()))
  r = verify({ urls.plain, "--list" })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, require("fixtures.pgdmp").pg_restore_list(file))
end)

t.test("--restore-into streams the object into a scratch database", function()
  h.dropdb("verify_s3_drill")
  local r = verify({ urls.zst, "--restore-into", h.pg().url("verify_s3_drill") })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "restored into verify_s3_drill %(dropped again%): row counts of 3 tables checked")
end)

t.test("s3://…/latest verifies the newest backup with a manifest", function()
  local l = h.pgvault({ "list", "--from", "s3://" .. BUCKET .. "/p/", "--json" }, { env = env })
  t.eq(l.code, 0, l.stderr)
  local newest = cjson.decode(l.stdout)[1]
  t.eq(newest.manifest, "ok")
  -- The three backups above may share one second (their names then sort by
  -- suffix), so the newest is whichever list names; -i only for an
  -- encrypted one (an identity given for a plain backup is refused).
  local args = { "s3://" .. BUCKET .. "/p/latest" }
  if newest.encrypted then args[2], args[3] = "-i", d .. "/key.txt" end
  local r = verify(args)
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "^" .. newest.path:gsub("%p", "%%%0") .. ": archive")
  -- nothing complete under a prefix
  r = verify({ "s3://" .. BUCKET .. "/nothing/latest" })
  t.eq(r.code, 1)
  t.match(r.stderr, "no complete backup")
end)

-- Copies a backup's manifest under `prefix` with `body` as its object.
local function planted(url, prefix, body)
  local name = url:match("([^/]+)$")
  local dst = "s3://" .. BUCKET .. "/" .. prefix .. "/" .. name
  s3.put(dst, body, direct())
  s3.put(dst .. ".manifest.json", s3.get(url .. ".manifest.json", direct()), direct())
  return dst
end

t.test("a tampered object fails, naming the problem", function()
  local body = s3.get(urls.plain, direct())
  local altered, n = body:gsub("pgvault%-marker%-ABCDEF", "pgvault-marker-ABCDEX")
  t.eq(n, 1, "the marker is in the uncompressed archive")
  local url = planted(urls.plain, "tampered", altered)
  local r = verify({ url })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "stored SHA%-256: the manifest says %x+, the backup has %x+")
  t.ok(one_line(r.stderr), r.stderr)
  -- truncated: the archive itself is incomplete
  url = planted(urls.zst, "truncated", s3.get(urls.zst, direct()):sub(1, -200))
  r = verify({ url })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "%f[^\n%z]pgvault: verify: " .. url:gsub("%p", "%%%0") .. ": zstd data is truncated")
  t.ok(one_line(r.stderr), r.stderr)
  -- the same object verifies when the manifest is not consulted
  url = planted(urls.plain, "tampered2", altered)
  t.eq(verify({ url, "--no-manifest" }).code, 0)
end)

t.test("a missing object, a wrong key: one clear line", function()
  local r = verify({ "s3://" .. BUCKET .. "/p/20000101000000_x.backup" })
  t.eq(r.code, 1)
  t.match(r.stderr, "no object s3://verify%-s3/p/20000101000000_x%.backup")
  t.ok(one_line(r.stderr), r.stderr)
  r = verify({ "s3://no-such-bucket-here/p/x.backup" })
  t.eq(r.code, 1)
  t.ok(one_line(r.stderr), r.stderr)
  r = verify({ urls.zst }, { AWS_SECRET_ACCESS_KEY = "wrong-secret-key-0000000000000000000000" })
  t.eq(r.code, 1)
  t.ok(one_line(r.stderr), r.stderr)
  t.ok(not r.stderr:find("wrong%-secret"), "the secret is not printed")
  t.match(r.stderr, "refused: HTTP 403 %(access key id %S+ from environment, endpoint http")
end)

t.teardown(function() h.dropdb("verify_s3_source_test") end)
