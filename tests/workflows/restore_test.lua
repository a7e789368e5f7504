-- covers: scripts/restore.lua scripts/lib/restore.lua scripts/lib/rowcheck.lua
-- pgvault restore against the harness cluster: a round trip with fidelity
-- (schema dump, per-table row counts and content hashes, large objects,
-- sequences, views, indexes, extensions), the swap of names with the old
-- database kept or dropped, sessions on it terminated, --jobs, --in-place,
-- and failures that never touch the live database.
local t = require "harness.testing"
local h = require "harness.env"
local fixture = require "harness.dbfixture"
local cjson = require "cjson"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"

local SRC_DB = "restore_source_test"
local src_url = fixture.create(SRC_DB)
local source_fp = fixture.fingerprint(src_url)
local PG = h.pg()
local backups = h.tmpdir()

local function last_line(s) return s:match("([^\n]*)\n?$") end

local function make_backup(args)
  local argv = { "backup", "--db", src_url, "--to", backups }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local r = h.pgvault(argv)
  assert(r.code == 0, r.stderr)
  return last_line(r.stdout)
end

local ZST = make_backup()
local GZ = make_backup({ "--compress", "pg" })

local function databases(prefix)
  local out = h.psql(PG.admin_url("postgres"),
    "SELECT datname FROM pg_database WHERE datname LIKE '" .. prefix .. "%' ORDER BY 1;")
  local list = {}
  for name in out:gmatch("[^\n]+") do list[#list + 1] = name end
  return list
end

local function restore(args, opts)
  local argv = { "restore" }
  for _, a in ipairs(args) do
    if a == "-q" or a == "-v" then table.insert(argv, 1, a) else argv[#argv + 1] = a end
  end
  return h.pgvault(argv, opts)
end

t.test("round trip into a new database: everything survives", function()
  local url = PG.url("restore_fresh_test")
  h.dropdb("restore_fresh_test")
  local r = restore({ ZST, "--db", url })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "restored .* into restore_fresh_test\n$")
  t.eq(fixture.fingerprint(url), source_fp)
  t.eq(#databases("restore_fresh_test_"), 0, "no leftover databases")
  h.dropdb("restore_fresh_test")
end)

t.test("restore over a live database swaps names and keeps the old one", function()
  local name = "restore_swap_test"
  local url = h.createdb(name)
  h.psql(url, "CREATE TABLE precious (v text); INSERT INTO precious VALUES ('the old copy');")
  local r = restore({ ZST, "--db", url })
  t.eq(r.code, 0, r.stderr)
  local old = r.stdout:match("kept as (" .. name .. "_old_%d+)")
  t.ok(old, "the old name is printed: " .. r.stdout)
  t.eq(fixture.fingerprint(url), source_fp, "the restored database took the name")
  t.eq(h.psql(PG.url(old), "SELECT v FROM precious;"), "the old copy\n", "the old database is intact")
  -- encoding, locale and owner came from the target
  t.eq(h.psql(PG.admin_url("postgres"), "SELECT pg_get_userbyid(datdba) || ' ' || datcollate FROM pg_database "
    .. "WHERE datname = '" .. name .. "';"), PG.user .. " en_US.UTF-8\n")
  h.dropdb(old)
  h.dropdb(name)
end)

t.test("sessions on the old database are terminated and the swap says so; --drop-old drops it", function()
  local name = "restore_sessions_test"
  local url = h.createdb(name)
  -- a session of the database's owner, which the owner may terminate
  local sleeper = proc.spawn({ PG.bindir .. "/psql", "-X", "-q", "-h", "127.0.0.1",
    "-p", tostring(math.tointeger(PG.port)), "-U", PG.user, "-d", name, "-c", "SELECT pg_sleep(60);",
    stdout = "pipe", stderr = "pipe", env = { PGPASSWORD = PG.password } })
  local deadline = proc.now() + 10
  while proc.now() < deadline and h.psql(PG.admin_url("postgres"),
    "SELECT count(*) FROM pg_stat_activity WHERE datname = '" .. name .. "';") == "0\n" do
    proc.sleep(0.05)
  end
  local r = restore({ GZ, "--db", url, "--drop-old", "--jobs", "2" })
  sleeper:wait(10)
  sleeper:close()
  t.eq(r.code, 0, r.stderr)
  local pid = r.stderr:match("terminating session (%d+) %(user " .. PG.user .. ", psql%) on database " .. name)
  t.ok(pid, r.stderr)
  local _, n = r.stderr:gsub("terminating session " .. pid .. " ", "")
  t.eq(n, 1, "each session is logged once: " .. r.stderr)
  t.match(r.stdout, "restored .* into " .. name .. "\n$")
  t.eq(#databases(name .. "_"), 0, "old copy dropped, nothing left over")
  t.eq(fixture.fingerprint(url, { no_schema = true }), (function()
    local fp = {}
    for k, v in pairs(source_fp) do fp[k] = v end
    fp.schema = nil
    return fp
  end)())
  h.dropdb(name)
end)

t.test("--jobs restores a .zst on several sessions as it arrives", function()
  local url = PG.url("restore_jobs_test")
  h.dropdb("restore_jobs_test")
  local r = restore({ ZST, "--db", url, "--jobs", "3" }, { env = { TMPDIR = h.tmpdir() } })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "on 3 sessions as it arrives")
  t.eq(fixture.fingerprint(url), source_fp)
  h.dropdb("restore_jobs_test")
end)

t.test("--in-place needs --yes, then drops and restores over the database", function()
  local name = "restore_inplace_test"
  local url = h.createdb(name)
  h.psql(url, "CREATE TABLE gone (a int);")
  local r = restore({ ZST, "--db", url, "--in-place" })
  t.eq(r.code, 2)
  t.match(r.stderr, "add %-%-yes")
  t.eq(h.psql(url, "SELECT count(*) FROM gone;"), "0\n", "untouched without --yes")
  r = restore({ ZST, "--db", url, "--in-place", "--yes" })
  t.eq(r.code, 0, r.stderr)
  t.eq(fixture.fingerprint(url), source_fp)
  t.eq(#databases(name .. "_"), 0)
  h.dropdb(name)
end)

-- A live database that every failed restore below must leave alone.
local LIVE = "restore_live_test"
local live_url = h.createdb(LIVE)
h.psql(live_url, "CREATE TABLE precious (v text); INSERT INTO precious VALUES ('still here');")

local function expect_untouched(r, pattern)
  t.eq(r.code, 1, "exit code: " .. r.stderr)
  t.match(r.stderr, pattern)
  -- one line besides lib.trust's warning that nothing proved who made the backup
  local rest = r.stderr:gsub("pgvault: warning: [^\n]*nothing proves it came from your backup job[^\n]*\n", "")
  t.eq(select(2, rest:gsub("\n", "")), 1, "one line: " .. r.stderr)
  t.no_match(r.stderr, PG.password)
  t.eq(h.psql(live_url, "SELECT v FROM precious;"), "still here\n", "live database untouched")
  t.eq(databases(LIVE), { LIVE }, "no new, old or half-restored database left")
end

t.test("a file that is not a backup fails before anything happens", function()
  local d = h.tmpdir()
  h.write(d .. "/notes.backup", "just some text, not PGDMP")
  expect_untouched(restore({ "-q", d .. "/notes.backup", "--db", live_url }), "is not a backup")
  expect_untouched(restore({ "-q", d .. "/missing.backup", "--db", live_url }), "no such file")
end)

t.test("a truncated archive fails and the new database is dropped", function()
  local d = h.tmpdir()
  local data = h.read(ZST)
  h.write(d .. "/cut.backup.zst", data:sub(1, #data // 2))
  expect_untouched(restore({ "-q", d .. "/cut.backup.zst", "--db", live_url }),
    "restore into " .. LIVE .. " failed %(database " .. LIVE .. " left as it was%)")
  local zeros = h.read(GZ):sub(1, 300)
  h.write(d .. "/short.backup", zeros)
  expect_untouched(restore({ "-q", d .. "/short.backup", "--db", live_url }), "pg_restore exited with status 1")
end)

t.test("an archive that does not match its manifest is refused", function()
  local d = h.tmpdir()
  local copy = d .. "/" .. ZST:match("[^/]+$")
  h.write(copy, h.read(ZST))
  local m = cjson.decode(h.read(ZST .. ".manifest.json"))
  m.stored.sha256 = string.rep("0", 64)
  h.write(copy .. ".manifest.json", cjson.encode(m))
  expect_untouched(restore({ "-q", copy, "--db", live_url }), "has SHA%-256 %x+ but its manifest says")
  -- row counts recorded in the manifest are checked table by table
  m = cjson.decode(h.read(ZST .. ".manifest.json"))
  m.tables = { { schema = "app", name = "customers", rows = 500 },
    { schema = "audit trail", name = "events", rows = 1999 } }
  h.write(copy .. ".manifest.json", cjson.encode(m))
  expect_untouched(restore({ "-q", copy, "--db", live_url }),
    "does not match the manifest: audit trail%.events has 2000 rows, expected 1999")
  m.tables[2].rows = 2000
  h.write(copy .. ".manifest.json", cjson.encode(m))
  local r = restore({ "-v", copy, "--db", PG.url("restore_counted_test") })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "row counts of 2 tables match the manifest")
  -- by default the server's count of inserted rows; --count-rows scans every table
  t.match(r.stderr, "row counts: 2 tables by the server's count of inserted rows, 0 by count%(%*%)")
  r = restore({ "-v", copy, "--db", PG.url("restore_counted_test"), "--count-rows", "--drop-old" })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "row counts: 0 tables by the server's count of inserted rows, 2 by count%(%*%)")
  h.dropdb("restore_counted_test")
end)

t.test("a wrong password or a missing server fails with one line", function()
  local bad = live_url:gsub(":[^:@/]*@", ":nope@")
  expect_untouched(restore({ "-q", ZST, "--db", bad }), "password authentication failed")
  local port = math.tointeger(PG.port) + 1
  local r = restore({ "-q", ZST, "--db", "postgresql://u:p@127.0.0.1:" .. port .. "/x" })
  t.eq(r.code, 1)
  t.match(r.stderr, "Connection refused")
end)

t.test("misuse exits 2", function()
  t.eq(restore({ ZST }).code, 2)
  t.eq(restore({ "--db", live_url }).code, 2)
  t.eq(restore({ ZST, "--db", live_url, "--jobs", "0" }).code, 2)
  t.eq(restore({ ZST, "--db", "postgresql://u@h" }).code, 2, "no database name in the URL")
end)

t.test("an option that would be ignored, or names a missing file, is a usage error naming it", function()
  -- regression test: --yes without --in-place and --database with a named backup were parsed and ignored
  -- (the restore ran), --jobs x did not say the value, a missing -i file did not name the option
  local before = databases(LIVE)
  local cases = {
    { { "--yes" }, "%-%-yes confirms %-%-in%-place and means nothing without it" },
    { { "--database", "other" }, "%-%-database chooses among backups: use it with DIR/latest or "
      .. "s3://BUCKET/PREFIX/latest, not " },
    { { "--jobs", "x" }, "%-%-jobs must be 1%.%.64, not 'x'" },
    { { "-i", backups .. "/no-such-key.txt" },
      "%-i/%-%-identity: no file .*no%-such%-key%.txt %(an age identity file" },
  }
  for _, c in ipairs(cases) do
    local argv = { ZST, "--db", live_url }
    for _, a in ipairs(c[1]) do argv[#argv + 1] = a end
    local r = restore(argv)
    t.eq(r.code, 2, r.stderr)
    t.match(r.stderr, c[2])
  end
  t.eq(databases(LIVE), before, "nothing was restored")
end)

-- Installs tests/fixtures/ext (an extension with a configuration table)
-- into the cluster's share directory; only our own, uniquely named files.
local function install_fixture_extension()
  local r = h.run({ PG.bindir .. "/pg_config", "--sharedir" })
  t.eq(r.code, 0, r.stderr)
  local dir = r.stdout:match("[^\n]+") .. "/extension"
  for _, f in ipairs({ "pgvault_cfg_test.control", "pgvault_cfg_test--1.0.sql" }) do
    local want = h.read(h.root .. "/tests/fixtures/ext/" .. f)
    if not fs.exists(dir .. "/" .. f) or h.read(dir .. "/" .. f) ~= want then h.write(dir .. "/" .. f, want) end
  end
end

t.test("an extension's configuration table and inherited tables restore: counts are the dump's own rows", function()
  install_fixture_extension()
  local src = h.createdb("restore_ext_source_test")
  h.psql(src, "CREATE EXTENSION pgvault_cfg_test; INSERT INTO pgvault_cfg VALUES ('delta', '4', false);"
    .. "CREATE TABLE legacy (id int); CREATE TABLE legacy_2024 () INHERITS (legacy);"
    .. "INSERT INTO legacy VALUES (1), (2); INSERT INTO legacy_2024 VALUES (3), (4), (5);")
  local r = h.pgvault({ "backup", "--db", src, "--to", backups, "--suffix", "ext" })
  t.eq(r.code, 0, r.stderr)
  local path = last_line(r.stdout)
  local m = cjson.decode(h.read(path .. ".manifest.json"))
  local dumped
  for _, tb in ipairs(m.tables) do if tb.name == "pgvault_cfg" then dumped = tb.rows end end
  t.eq(dumped, 1, "only the row the extension did not create is in the dump")
  local target = "restore_ext_restored_test"
  h.dropdb(target)
  r = restore({ path, "--db", PG.url(target) })
  t.eq(r.code, 0, r.stderr)
  local q = "SELECT string_agg(k || '=' || v, ',' ORDER BY k) FROM pgvault_cfg"
  t.eq(h.psql(PG.url(target), q), "alpha=1,beta=2,delta=4,gamma=3\n")
  t.eq(h.psql(PG.url(target), q), h.psql(src, q), "the same rows as the source")
  t.eq(h.psql(PG.url(target), "SELECT count(*) FROM legacy"), "5\n", "the parent's rows and its child's")
  h.dropdb(target)
  -- and the restore drill of verify counts the same way
  r = h.pgvault({ "verify", path, "--restore-into", PG.url("restore_ext_drill_test") })
  t.eq(r.code, 0, r.stderr .. r.stdout)
  h.dropdb("restore_ext_source_test")
end)
