-- covers: scripts/backup.lua scripts/lib/backup.lua scripts/lib/s3backups.lua
-- backup --to s3://…, list and restore from a bucket: the archive streams
-- into a multipart upload, the manifest follows as the commit marker,
-- 'latest' picks the newest backup that has one, and a failure (pg_dump
-- killed, every request refused) leaves no object and no upload behind.
local t = require "harness.testing"
local h = require "harness.env"
local fixture = require "harness.dbfixture"
local children = require "harness.children"
local s3proxy = require "harness.s3proxy"
local s3h = require "harness.s3"
local cjson = require "cjson"
local proc = require "pgvault.proc"
local s3 = require "pgvault.s3"
local stream = require "pgvault.stream"
local fs = require "pgvault.fs"

local SRC_DB = "backup_s3_source_test"
local src_url = fixture.create(SRC_DB)
local make_bucket, direct = s3h.make_bucket, s3h.direct

local function last_line(s) return s:match("([^\n]*)\n?$") end

t.test("backup to a bucket, list it, restore s3://…/latest with fidelity", function()
  local bucket = make_bucket("backup-s3")
  local env = h.s3().env
  local wd = h.tmpdir()
  local r = h.pgvault({ "backup", "--db", src_url, "--to", "s3://" .. bucket .. "/nightly/", "--suffix", "prod" },
    { env = env, cwd = wd })
  t.eq(r.code, 0, r.stderr)
  t.eq(#fs.listdir(wd), 0, "a backup to a bucket writes nothing locally (no ./s3:/ directory)")
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
  r = h.pgvault({ "restore", "s3://" .. bucket .. "/nightly/latest",
    "--database", SRC_DB, "--db", h.pg().url(target), "--drop-old" },
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
  -- list -i reads each encrypted object's header with a ranged GET
  local other = d .. "/other.txt"
  t.eq(h.run({ "age-keygen", "-o", other }).code, 0)
  for _, case in ipairs({ { d .. "/key.txt", "yes" }, { other, "no" } }) do
    local l = h.pgvault({ "list", "--from", "s3://" .. bucket .. "/enc/", "--json", "-i", case[1] }, { env = env })
    t.eq(l.code, 0, l.stderr)
    local rows = cjson.decode(l.stdout)
    t.eq(#rows, 1)
    t.eq(rows[1].key, case[2], "KEY with " .. case[1])
  end
  local target = "backup_s3_age_restored_test"
  h.dropdb(target)
  r = h.pgvault({ "restore", "s3://" .. bucket .. "/enc/latest",
    "--database", SRC_DB, "--db", h.pg().url(target), "-i", d .. "/key.txt" },
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
  t.eq(#s3h.open_uploads(bucket), 0, "the server holds no multipart upload")
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
  t.eq(#s3h.open_uploads(bucket), 0, "the server holds no multipart upload")
  t.eq(#s3.list("s3://" .. bucket .. "/", direct()), 0, "no object")
end)

-- restore s3://… with one job streams the object into pg_restore: no
-- temporary file (TMPDIR points at a directory that does not exist, so any
-- temporary file would fail the run, as the --jobs 2 control shows).
local SMALL_DB = "backup_s3_small_test"
local small_url = h.createdb(SMALL_DB)
h.psql(small_url, "CREATE TABLE t (id int PRIMARY KEY, note text); "
  .. "INSERT INTO t SELECT g, 'note ' || g FROM generate_series(1, 300) g; "
  .. "CREATE TABLE marker (s text); INSERT INTO marker VALUES ('pgvault-marker-ABCDEF');")

local with_env = s3h.env

local function small_fingerprint(url)
  return h.psql(url, "SELECT count(*), md5(string_agg(id || ':' || note, ',' ORDER BY id)) FROM t; "
    .. "SELECT s FROM marker;")
end

local function restore_dbs()
  return h.psql(h.pg().admin_url("postgres"),
    "SELECT count(*) FROM pg_database WHERE datname LIKE 'backup_s3_stream_target%_restore_%';")
end

t.test("restore s3://… with one job streams: no temporary file; --jobs 2 lays one down", function()
  local bucket = make_bucket("backup-s3-stream")
  local r = h.pgvault({ "backup", "--db", small_url, "--to", "s3://" .. bucket .. "/p/" }, { env = h.s3().env })
  t.eq(r.code, 0, r.stderr)
  local url = last_line(r.stdout)
  local target = "backup_s3_stream_target"
  h.dropdb(target)
  local no_tmp = h.tmpdir() .. "/does-not-exist"
  -- valgrind itself needs TMPDIR (it fails without one), so these two runs
  -- go without it; the same restore paths run under it below and elsewhere.
  r = h.pgvault({ "restore", "s3://" .. bucket .. "/p/latest", "--database", SMALL_DB, "--db", h.pg().url(target) },
    { env = with_env({ TMPDIR = no_tmp }), timeout = 120, no_valgrind = true })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "restored " .. url:gsub("%p", "%%%0") .. " into " .. target)
  t.eq(small_fingerprint(h.pg().url(target)), small_fingerprint(small_url), "restored faithfully")
  -- the control: --jobs 2 needs a temporary file, and fails without one
  r = h.pgvault({ "restore", url, "--db", h.pg().url(target), "--jobs", "2", "--drop-old" },
    { env = with_env({ TMPDIR = no_tmp }), timeout = 120, no_valgrind = true })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "cannot create a temporary directory in " .. no_tmp:gsub("%p", "%%%0"))
  -- and restores with one
  r = h.pgvault({ "restore", url, "--db", h.pg().url(target), "--jobs", "2", "--drop-old" },
    { env = h.s3().env, timeout = 120 })
  t.eq(r.code, 0, r.stderr)
  t.eq(small_fingerprint(h.pg().url(target)), small_fingerprint(small_url), "restored with --jobs 2")
  h.dropdb(target)
end)

t.test("Ctrl-C during a restore from a bucket: exit 130, pg_restore stopped, the new database dropped", function()
  local bucket = make_bucket("backup-s3-interrupt")
  local r = h.pgvault({ "backup", "--db", small_url, "--to", "s3://" .. bucket .. "/p/" }, { env = h.s3().env })
  t.eq(r.code, 0, r.stderr)
  local target = "backup_s3_stream_target"
  h.dropdb(target)
  local live = h.createdb(target)
  h.psql(live, "CREATE TABLE live (x int); INSERT INTO live VALUES (42);")
  local proxy <close> = s3proxy.start()
  -- a first restore through the proxy counts the GETs before the archive's body
  r = h.pgvault({ "restore", "s3://" .. bucket .. "/p/latest",
    "--database", SMALL_DB, "--db", h.pg().url("backup_s3_interrupt_probe"),
    "--drop-old" }, { env = proxy:env(), timeout = 120 })
  t.eq(r.code, 0, r.stderr)
  h.dropdb("backup_s3_interrupt_probe")
  local gets = proxy:stats().ops.GetObject
  -- then the archive's body is held back: pg_restore waits on its input
  proxy:reset()
  proxy:rules({ { op = "GetObject", action = "slow", ms = 30000, after = gets - 1 } })
  local handle, output = children.pgvault({ "restore", "s3://" .. bucket .. "/p/latest",
    "--database", SMALL_DB, "--db", live },
    proxy:env())
  local pid = children.find(handle:pid(), "pg_restore")
  t.ok(pid, "pg_restore started")
  local deadline = proc.now() + 20
  while proxy:stats().injected == 0 and proc.now() < deadline do proc.sleep(0.05) end
  t.eq(proxy:stats().injected, 1, "the archive's GET is being held")
  handle:kill("INT")
  local code = handle:wait(30)
  handle:close()
  local _, stderr = output()
  t.eq(code, 130, stderr)
  t.match(stderr, "interrupted")
  t.ok(not proc.kill(pid, "0"), "pg_restore was stopped too")
  t.eq(h.psql(live, "SELECT x FROM live;"), "42\n", "the live database is untouched")
  t.eq(restore_dbs(), "0\n", "the new database was dropped: " .. stderr)
  h.dropdb(target)
end)

-- Issue 12: no backup or manifest is ever overwritten in a bucket. The
-- names are taken by hand (a backup of the same second and suffix from
-- elsewhere); backup refuses them or picks another name, and what was
-- there stays as it was.
t.test("a taken archive or manifest name in the bucket is never overwritten", function()
  local bucket = make_bucket("backup-s3-taken")
  local backup = require "lib.backup"
  local naming = require "lib.naming"
  local when = os.time() - 86400
  local name = naming.archive_name(naming.stamp(when), "prod", ".zst")
  local archive = "s3://" .. bucket .. "/p/" .. name
  s3.put(archive, "someone else's archive", direct())
  local ok, res = pcall(backup.run, { db = small_url, to = "s3://" .. bucket .. "/p/", suffix = "prod", time = when,
    s3 = direct() })
  t.eq(s3.get(archive, direct()), "someone else's archive", "the archive under that name is untouched")
  if ok then
    t.neq(res.path, archive, "a backup that succeeds went under another name")
  else
    t.eq(res.kind, "exists", tostring(res))
  end
  t.eq(#s3h.open_uploads(bucket), 0, "no multipart upload left")
  -- the manifest's name taken while the archive's is free
  when = when - 3600
  name = naming.archive_name(naming.stamp(when), "prod", ".zst")
  archive = "s3://" .. bucket .. "/q/" .. name
  s3.put(naming.manifest_path(archive), '{"not": "ours"}', direct())
  ok, res = pcall(backup.run, { db = small_url, to = "s3://" .. bucket .. "/q/", suffix = "prod", time = when,
    s3 = direct() })
  t.eq(s3.get(naming.manifest_path(archive), direct()), '{"not": "ours"}', "the manifest is untouched")
  if ok then
    t.neq(res.path, archive, "a backup that succeeds went under another name")
  else
    t.eq(res.kind, "exists", tostring(res))
    t.eq(s3.head(archive, direct()), nil, "no archive left without its manifest")
  end
end)

t.test("a tampered object in the bucket fails the restore; the live database is untouched", function()
  local bucket = make_bucket("backup-s3-tampered")
  local r = h.pgvault({ "backup", "--db", small_url, "--to", "s3://" .. bucket .. "/p/", "--compress", "none" },
    { env = h.s3().env })
  t.eq(r.code, 0, r.stderr)
  local url = last_line(r.stdout)
  -- a modified copy under the backup's name, its manifest kept: the archive
  -- is still well-formed, so only the manifest's SHA-256 can tell
  local body = s3.get(url, direct())
  local altered, n = body:gsub("pgvault%-marker%-ABCDEF", "pgvault-marker-ABCDEX")
  t.eq(n, 1)
  s3.put(url, altered, direct())
  local target = "backup_s3_stream_target"
  h.dropdb(target)
  local live = h.createdb(target)
  h.psql(live, "CREATE TABLE live (x int); INSERT INTO live VALUES (42);")
  r = h.pgvault({ "restore", "s3://" .. bucket .. "/p/latest",
    "--database", SMALL_DB, "--db", live }, { env = h.s3().env, timeout = 120 })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "restore into " .. target .. " failed %(database " .. target .. " left as it was%)")
  t.match(r.stderr, "has SHA%-256 %x+ but its manifest says %x+")
  t.eq(h.psql(live, "SELECT x FROM live;"), "42\n", "the live database is untouched")
  t.eq(restore_dbs(), "0\n", "the new database was dropped")
  -- a truncated one: the size differs, pg_restore sees an incomplete archive
  s3.put(url, body:sub(1, #body - 100), direct())
  r = h.pgvault({ "restore", url, "--db", live }, { env = h.s3().env, timeout = 120 })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "left as it was")
  t.eq(h.psql(live, "SELECT x FROM live;"), "42\n")
  t.eq(restore_dbs(), "0\n")
  h.dropdb(target)
  h.dropdb(SMALL_DB)
end)
