-- backup --to s3://…, list and restore from a bucket: the archive streams
-- into a multipart upload, the manifest follows as the commit marker,
-- 'latest' picks the newest backup that has one, and a failure (pg_dump
-- killed, every request refused) leaves no object and no upload behind.
local t = require "harness.testing"
local h = require "harness.env"
local fixture = require "harness.dbfixture"
local children = require "harness.children"
local s3proxy = require "harness.s3proxy"
local cjson = require "cjson"
local proc = require "pgvault.proc"
local s3 = require "pgvault.s3"
local stream = require "pgvault.stream"

local SRC_DB = "backup_s3_source_test"
local src_url = fixture.create(SRC_DB)


-- Buckets are made by pgvault itself: far quicker than starting the aws CLI.
local function make_bucket(name)
  local c = h.s3()
  s3.create_bucket("s3://" .. name, { endpoint_url = c.endpoint, region = c.region, access_key_id = c.access_key,
    secret_access_key = c.secret_key })
  return name
end
local function direct()
  local c = h.s3()
  return { endpoint_url = c.endpoint, region = c.region, access_key_id = c.access_key,
    secret_access_key = c.secret_key }
end

local function last_line(s) return s:match("([^\n]*)\n?$") end

t.test("backup to a bucket, list it, restore s3://…/latest with fidelity", function()
  local bucket = make_bucket("backup-s3")
  local env = h.s3().env
  local r = h.pgvault({ "backup", "--db", src_url, "--to", "s3://" .. bucket .. "/nightly/", "--suffix", "prod" },
    { env = env })
  t.eq(r.code, 0, r.stderr)
  local url = last_line(r.stdout)
  t.match(url, "^s3://backup%-s3/nightly/%d+_prod%.backup%.zst$")
  -- the manifest is there and matches what the aws CLI downloads
  local m = cjson.decode(s3.get(url .. ".manifest.json", direct()))
  local d = h.tmpdir()
  local a = h.aws({ "s3", "cp", url, d .. "/a.zst" })
  t.eq(a.code, 0, a.stderr)
  local got = stream.run { stream.file_reader(d .. "/a.zst"), stream.sha256(), stream.discard() }
  t.eq(got.sha256.sha256, m.stored.sha256, "stored SHA-256")
  t.eq(got.bytes, m.stored.bytes)
  -- an unfinished backup (no manifest) that is newer must be ignored by latest
  proc.sleep(1.05)
  local stamp = os.date("!%Y%m%d%H%M%S")
  t.eq(h.aws({ "s3", "cp", d .. "/a.zst", "s3://" .. bucket .. "/nightly/" .. stamp .. "_prod.backup.zst" }).code, 0)
  r = h.pgvault({ "list", "--from", "s3://" .. bucket .. "/nightly/", "--json" }, { env = env })
  t.eq(r.code, 0, r.stderr)
  local rows = cjson.decode(r.stdout)
  t.eq(#rows, 2)
  t.eq(rows[1].manifest, "missing", "the newest has no manifest")
  t.eq(rows[2].manifest, "ok")
  t.eq(rows[2].path, url)
  local target = "backup_s3_restored_test"
  h.dropdb(target)
  r = h.pgvault({ "restore", "s3://" .. bucket .. "/nightly/latest", "--db", h.pg().url(target), "--drop-old" },
    { env = env, timeout = 300 })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "restored " .. url:gsub("%p", "%%%0"))
  t.eq(fixture.fingerprint(h.pg().url(target)), fixture.fingerprint(src_url), "restored faithfully")
  h.dropdb(target)
  -- nothing complete under an empty prefix
  r = h.pgvault({ "restore", "s3://" .. bucket .. "/empty/latest", "--db", h.pg().url(target) }, { env = env })
  t.eq(r.code, 1)
  t.match(r.stderr, "no complete backup")
end)

t.test("an encrypted backup to a bucket restores with the identity", function()
  local bucket = make_bucket("backup-s3-age")
  local env = h.s3().env
  local d = h.tmpdir()
  local k = h.run({ "age-keygen", "-o", d .. "/key.txt" })
  t.eq(k.code, 0, k.stderr)
  local pub = h.run({ "age-keygen", "-y", d .. "/key.txt" }).stdout:match("%S+")
  local r = h.pgvault({ "backup", "--db", src_url, "--to", "s3://" .. bucket .. "/enc", "-r", pub }, { env = env })
  t.eq(r.code, 0, r.stderr)
  t.match(last_line(r.stdout), "^s3://backup%-s3%-age/enc/%d+_local%.backup%.zst%.age$")
  local target = "backup_s3_age_restored_test"
  h.dropdb(target)
  r = h.pgvault({ "restore", "s3://" .. bucket .. "/enc/latest", "--db", h.pg().url(target), "-i", d .. "/key.txt" },
    { env = env, timeout = 300 })
  t.eq(r.code, 0, r.stderr)
  t.eq(fixture.fingerprint(h.pg().url(target), { no_schema = true }),
    fixture.fingerprint(src_url, { no_schema = true }), "restored faithfully")
  h.dropdb(target)
end)

-- A database large enough that parts are in flight while pg_dump still runs.
local BIG_DB = "backup_s3_big_test"
local big_url = h.createdb(BIG_DB)
h.psql(big_url, "CREATE TABLE filler AS SELECT g, md5(g::text) || md5((g*7)::text) || md5((g*13)::text) AS t "
  .. "FROM generate_series(1, 400000) g;")

t.test("pg_dump killed mid-stream: exit 1, the multipart upload aborted, nothing in the bucket", function()
  local bucket = make_bucket("backup-s3-kill")
  local proxy <close> = s3proxy.start()
  proxy:rules({ { op = "UploadPart", action = "slow", ms = 4000 } })
  local handle, output = children.pgvault({ "backup", "--db", big_url, "--to", "s3://" .. bucket .. "/p/",
    "--compress", "none", "--part-size", "5", "--parallel", "2" }, proxy:env())
  local pid = children.find(handle:pid(), "pg_dump", "dbname=")
  t.ok(pid, "pg_dump started")
  local deadline = proc.now() + 60
  while #proxy:uploads("open") == 0 and proc.now() < deadline do proc.sleep(0.05) end
  t.eq(#proxy:uploads("open"), 1, "the upload is under way")
  proc.kill(pid, "KILL")
  local code = handle:wait(60)
  handle:close()
  local _, stderr = output()
  t.eq(code, 1, stderr)
  t.match(stderr, "pg_dump was killed by signal 9")
  t.eq(#proxy:uploads("open"), 0, "no multipart upload left")
  t.eq(#proxy:uploads("aborted"), 1)
  t.eq(#s3.list("s3://" .. bucket .. "/", direct()), 0, "no object, no manifest")
end)

t.test("every request refused: the backup fails cleanly, nothing left", function()
  local bucket = make_bucket("backup-s3-refused")
  local proxy <close> = s3proxy.start()
  proxy:rules({ { op = "*", action = "status503", except = { "CreateMultipartUpload", "AbortMultipartUpload" } } })
  local r = h.pgvault({ "backup", "--db", big_url, "--to", "s3://" .. bucket .. "/p/", "--compress", "none",
    "--part-size", "5", "--retries", "2" }, { env = proxy:env() })
  t.eq(r.code, 1)
  t.match(r.stderr, "failed after 2 attempts")
  t.eq(#proxy:uploads("open"), 0, "no multipart upload left")
  t.eq(#s3.list("s3://" .. bucket .. "/", direct()), 0, "no object")
end)
