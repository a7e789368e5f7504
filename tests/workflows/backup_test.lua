-- covers: scripts/backup.lua scripts/lib/backup.lua scripts/lib/naming.lua
-- pgvault backup against the harness cluster: the default (pg_dump -Z0,
-- zstd on every core), --compress pg and none, the manifest, the path as
-- the last line of stdout, the collation warning surfaced once, and bad
-- inputs: each one clear line, a non-zero exit and nothing under a final name.
local t = require "harness.testing"
local h = require "harness.env"
local fixture = require "harness.dbfixture"
local children = require "harness.children"
local cjson = require "cjson"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local stream = require "pgvault.stream"

local DB = "backup_workflow_test"
local url = fixture.create(DB)
local PG = h.pg()

local function backup(args, opts)
  local argv = { "backup", "--db", url }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  return h.pgvault(argv, opts)
end

local function last_line(s)
  return s:match("([^\n]*)\n?$")
end

local function sha256_file(path)
  return h.run({ "sha256sum", path }).stdout:match("^(%x+)")
end

t.test("default: a zstd-compressed custom archive, a manifest, and the path last on stdout", function()
  local d = h.tmpdir()
  local r = backup({ "--to", d, "--suffix", "staging" })
  t.eq(r.code, 0, r.stderr)
  local path = last_line(r.stdout)
  t.match(path, "^" .. d:gsub("%p", "%%%0") .. "/%d%d%d%d%d%d%d%d%d%d%d%d%d%d_staging%.backup%.zst$")
  local stamp = path:match("/(%d+)_")
  t.ok(math.abs(os.time() - require("lib.naming").stamp_time(stamp)) < 120, "UTC time stamp")
  t.eq(fs.stat(path).mode, 384, "archive is 0600")
  -- zstd -d gives back an ordinary archive that pg_restore lists
  local plain = d .. "/plain.backup"
  t.eq(h.run({ "zstd", "-q", "-d", "-o", plain, path }).code, 0)
  local list = h.run({ PG.bindir .. "/pg_restore", "-l", plain })
  t.eq(list.code, 0, list.stderr)
  t.match(list.stdout, "Compression: 0", "pg_dump wrote it uncompressed")
  t.match(list.stdout, "TABLE DATA app customers")
  t.match(list.stdout, "BLOB")
  local m = cjson.decode(h.read(path .. ".manifest.json"))
  t.eq(m.format, 1)
  t.eq(m.environment, "staging")
  t.eq(m.database, DB)
  t.eq(m.server_version_num // 10000, 15)
  t.match(m.pg_dump_version, "^15%.")
  t.eq(m.compression.method, "zstd")
  t.eq(m.compression.level, 3)
  t.eq(m.stored.bytes, fs.stat(path).size)
  t.eq(m.stored.sha256, sha256_file(path))
  t.eq(m.plain.bytes, fs.stat(plain).size)
  t.eq(m.plain.sha256, sha256_file(plain))
  t.match(m.created_at, "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$")
  t.no_match(h.read(path .. ".manifest.json"), PG.password, "no password in the manifest")
  t.no_match(r.stderr, PG.password, "no password in the log")
  t.eq(#fs.listdir(d), 3, "archive, manifest, and the file we decompressed")
end)

t.test("--compress pg keeps pg_dump's gzip in a plain .backup; none stores it raw", function()
  local d = h.tmpdir()
  local r = backup({ "--to", d, "--compress", "pg", "--level", "5" })
  t.eq(r.code, 0, r.stderr)
  local path = last_line(r.stdout)
  t.match(path, "_local%.backup$")
  t.eq(h.read(path):sub(1, 5), "PGDMP")
  local list = h.run({ PG.bindir .. "/pg_restore", "-l", path })
  t.match(list.stdout, "Compression: 5")
  local m = cjson.decode(h.read(path .. ".manifest.json"))
  t.eq(m.compression, { method = "pg", level = 5 })
  t.eq(m.stored.sha256, m.plain.sha256, "stored bytes are the archive")
  local raw = backup({ "--to", d, "--compress", "none" })
  t.eq(raw.code, 0, raw.stderr)
  local rpath = last_line(raw.stdout)
  t.match(h.run({ PG.bindir .. "/pg_restore", "-l", rpath }).stdout, "Compression: 0")
  t.ok(fs.stat(rpath).size > fs.stat(path).size, "uncompressed is larger")
end)

t.test("usage errors exit 2 with one line", function()
  local r = h.pgvault({ "backup" })
  t.eq(r.code, 2)
  t.match(r.stderr, "missing %-%-db URL")
  r = backup({ "--compress", "brotli" })
  t.eq(r.code, 2)
  t.match(r.stderr, "%-%-compress must be zstd, pg or none")
  r = backup({ "--suffix", "../evil" })
  t.eq(r.code, 2)
  r = backup({ "--level", "42" })
  t.eq(r.code, 2)
  t.match(r.stderr, "%-%-level for zstd must be 1%.%.19, not 42") -- regression test: the value was not said
  r = backup({ "--compress", "pg", "--level", "12" })
  t.eq(r.code, 2)
  t.match(r.stderr, "%-%-level for pg %(gzip%) must be 1%.%.9, not 12")
  r = backup({ "-R", "/nonexistent/recipients.txt" }) -- regression test: did not name the option (exit 1)
  t.eq(r.code, 2)
  t.match(r.stderr, "%-R/%-%-recipients%-file: no file /nonexistent/recipients%.txt %(it lists age recipients")
end)

t.test("a password-protected signing key without its password: the error names the option that gives it", function()
  -- regression test: it said only "none was given", not where a password goes
  local dir = h.tmpdir()
  h.write(dir .. "/pw.txt", "correct horse\n")
  local k = h.pgvault({ "keygen", "--sign", "--password-file", dir .. "/pw.txt", "-o", dir .. "/sign.key" })
  t.eq(k.code, 0, k.stderr)
  local r = backup({ "--to", dir .. "/out", "--sign", dir .. "/sign.key" })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "the signing key is encrypted with a password, and none was given: give the file holding its "
    .. "password with %-%-sign%-password%-file FILE")
  t.eq(fs.exists(dir .. "/out"), false, "nothing was dumped")
  r = h.pgvault({ "keygen", "--sign", "-y", dir .. "/sign.key" })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "give the file holding its password with %-%-password%-file FILE")
end)

local function expect_failure(r, pattern, dir)
  t.eq(r.code, 1, "exit code (stderr: " .. r.stderr .. ")")
  t.match(r.stderr, pattern)
  local lines = select(2, r.stderr:gsub("\n", ""))
  t.eq(lines, 1, "one line on stderr: " .. r.stderr)
  t.match(r.stderr, "^pgvault: backup: ")
  t.no_match(r.stderr, PG.password)
  if dir then
    local left = fs.exists(dir) and fs.listdir(dir) or {}
    t.eq(#left, 0, "nothing left in " .. dir)
  end
end

t.test("bad inputs: wrong password, unreachable host, missing database", function()
  local d = h.tmpdir() .. "/out"
  local bad = url:gsub(":[^:@/]*@", ":not-the-password@")
  expect_failure(h.pgvault({ "-q", "backup", "--db", bad, "--to", d }), "password authentication failed", d)
  local port = math.tointeger(PG.port) + 1
  expect_failure(h.pgvault({ "-q", "backup", "--db", "postgresql://u:pw@127.0.0.1:" .. port .. "/x", "--to", d }),
    "Connection refused", d)
  expect_failure(h.pgvault({ "-q", "backup", "--db", PG.url("no_such_database"), "--to", d }),
    "does not exist", d)
end)

t.test("a read-only or full target directory fails cleanly", function()
  local ro = h.mount_tmpfs("1m", { ro = true })
  expect_failure(h.pgvault({ "-q", "backup", "--db", url, "--to", ro }), "cannot write to " .. ro:gsub("%p", "%%%0"),
    ro)
  -- 1 MiB cannot hold this database's archive, compressed or not
  h.psql(url, [[CREATE TABLE IF NOT EXISTS filler AS
    SELECT g, md5(random()::text) || md5(random()::text) || md5(random()::text) AS x
    FROM generate_series(1, 40000) g;]])
  local full = h.mount_tmpfs("1m")
  expect_failure(h.pgvault({ "-q", "backup", "--db", url, "--to", full }), "No space left on device", full)
  h.psql(url, "DROP TABLE filler;")
end)

t.test("a killed pg_dump leaves nothing under the final name", function()
  local d = h.tmpdir()
  local release = children.lock_table(DB, "app.customers")
  local handle, output = children.pgvault({ "backup", "--db", url, "--to", d })
  local pid = children.find(handle:pid(), "pg_dump", "dbname=")
  t.ok(pid, "pg_dump started")
  proc.kill(pid, "KILL")
  local code = handle:wait(60)
  handle:close()
  release()
  local stdout, stderr = output()
  t.eq(code, 1)
  t.match(stderr, "pgvault: backup: backup of " .. DB .. " failed: pg_dump was killed by signal 9")
  t.eq(stdout, "", "no path printed")
  t.eq(#fs.listdir(d), 0, "no archive, no .partial, no manifest")
end)

t.test("the collation version WARNING is surfaced once, pointing at collation-check", function()
  local name = "backup_collation_test"
  local curl = h.createdb(name)
  h.psql(curl, "CREATE TABLE x (t text); INSERT INTO x VALUES ('a');")
  h.psql(PG.admin_url("postgres"),
    "UPDATE pg_database SET datcollversion = '0.0-pgvault-test' WHERE datname = '" .. name .. "';")
  local d = h.tmpdir()
  local r = h.pgvault({ "backup", "--db", curl, "--to", d })
  t.eq(r.code, 0, r.stderr)
  local _, hints = r.stderr:gsub("pgvault collation%-check", "")
  t.eq(hints, 1, "one hint: " .. r.stderr)
  t.match(r.stderr, "warning: database \"" .. name .. "\" has a collation version mismatch%. The database was created")
  t.eq(select(2, r.stderr:gsub("collation version mismatch", "")), 1, "said once: " .. r.stderr)
  h.dropdb(name)
end)

t.test("Ctrl-C stops pg_dump, exits 130 and leaves nothing", function()
  local d = h.tmpdir()
  local release = children.lock_table(DB, "app.customers")
  local handle, output = children.pgvault({ "backup", "--db", url, "--to", d })
  local pid = children.find(handle:pid(), "pg_dump", "dbname=")
  t.ok(pid, "pg_dump started")
  handle:kill("INT")
  local code = handle:wait(30)
  handle:close()
  release()
  local _, stderr = output()
  t.eq(code, 130, stderr)
  t.match(stderr, "pgvault: backup: interrupted")
  t.ok(not proc.kill(pid, "0"), "pg_dump was stopped too")
  t.eq(#fs.listdir(d), 0, "no archive, no .partial, no manifest")
end)

-- Two backups of different databases, at once, into one place, with one
-- time stamp: before, they got one name (locally the second failed or both
-- wrote one .partial; in a bucket the second replaced the first).
local function two_at_once(to, env)
  local script = h.tmpdir() .. "/at.lua"
  h.write(script, 'local b = require("lib.backup").run { db = arg[1], to = arg[2], time = 1767225600 }\n'
    .. 'print(b.path)\n')
  local urls, locks, handles, outputs = {}, {}, {}, {}
  for i, name in ipairs({ "backup_twin_a", "backup_twin_b" }) do
    urls[i] = h.createdb(name)
    h.psql(urls[i], "CREATE TABLE t AS SELECT g, '" .. name .. "' AS who FROM generate_series(1, 2000) g;")
    -- pg_dump waits on the lock, so both are writing at the same time once released
    locks[i] = children.lock_table(name, "public.t")
    handles[i], outputs[i] = children.pgvault({ "run", script, urls[i], to }, env)
  end
  for i = 1, 2 do t.ok(children.find(handles[i]:pid(), "pg_dump"), "pg_dump " .. i .. " started") end
  for i = 1, 2 do locks[i]() end
  local paths = {}
  for i = 1, 2 do
    t.eq(handles[i]:wait(60), 0, select(2, outputs[i]()))
    handles[i]:close()
    paths[i] = last_line(outputs[i]())
  end
  t.neq(paths[1], paths[2], "two names")
  local names = { paths[1]:match("[^/]+$"), paths[2]:match("[^/]+$") }
  table.sort(names)
  t.eq(names, { "20260101000000-2_local.backup.zst", "20260101000000_local.backup.zst" })
  return paths, urls
end

t.test("two databases backed up at once into one directory: two names, each whole", function()
  local d = h.tmpdir()
  local paths = two_at_once(d)
  for i, name in ipairs({ "backup_twin_a", "backup_twin_b" }) do
    local m = cjson.decode(h.read(paths[i] .. ".manifest.json"))
    t.eq(m.database, name)
    t.eq(m.stored.sha256, sha256_file(paths[i]), "the archive is the one its manifest describes")
    t.eq(m.tables[1].rows, 2000)
  end
  t.eq(#fs.listdir(d), 4, "two archives, two manifests, no reservation left")
  h.dropdb("backup_twin_a")
  h.dropdb("backup_twin_b")
end)

t.test("two databases backed up at once into one prefix: two names, each whole", function()
  local c = h.s3()
  local s3 = require "pgvault.s3"
  local opts = require("harness.s3").direct()
  require("harness.s3").make_bucket("backup-twins")
  local paths = two_at_once("s3://backup-twins/p/", c.env)
  for i, name in ipairs({ "backup_twin_a", "backup_twin_b" }) do
    local m = cjson.decode(s3.get(paths[i] .. ".manifest.json", opts))
    t.eq(m.database, name)
    local ro = { url = paths[i] }
    for k, v in pairs(opts) do ro[k] = v end
    local got = stream.run { s3.reader(ro), stream.sha256(), stream.discard() }
    t.eq(got.sha256.sha256, m.stored.sha256, "the object is the one its manifest describes")
  end
  local keys = s3.client(opts):list("s3://backup-twins/p/")
  t.eq(#keys, 4, "two objects, two manifests, no reservation left")
  h.dropdb("backup_twin_a")
  h.dropdb("backup_twin_b")
end)
