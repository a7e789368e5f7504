-- covers: scripts/backup.lua scripts/restore.lua scripts/lib/layers.lua
-- Encrypted backups end to end: backup -r/-R (age, as the archive streams;
-- names ….backup.zst.age and ….backup.age; fingerprints, never secrets, in
-- the manifest; the age CLI opens them), restore -i (streaming and --jobs),
-- a tampered or truncated backup aborting the restore and dropping the new
-- database, and list -i telling which backups a key opens.
local t = require "harness.testing"
local h = require "harness.env"
local fixture = require "harness.dbfixture"
local cjson = require "cjson"
local crypto = require "pgvault.crypto"
local fs = require "pgvault.fs"

local SRC_DB = "age_backup_source_test"
local src_url = fixture.create(SRC_DB)
local source_fp = fixture.fingerprint(src_url)
local PG = h.pg()
local keys = h.tmpdir()

local function keypair(name)
  local path = keys .. "/" .. name
  assert(h.run({ "age-keygen", "-o", path }).code == 0)
  return path, h.run({ "age-keygen", "-y", path }).stdout:match("%S+")
end
local KEY1, PUB1 = keypair("k1.txt")
local KEY2, PUB2 = keypair("k2.txt")
local OTHER = keypair("other.txt")
h.write(keys .. "/team.txt", "# the team\n" .. PUB2 .. "\n")

local function backup(dir, args)
  local argv = { "backup", "--db", src_url, "--to", dir }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r = h.pgvault(argv)
  return r, r.stdout:match("([^\n]*)\n?$")
end

local function databases(prefix)
  local out = h.psql(PG.admin_url("postgres"),
    "SELECT datname FROM pg_database WHERE datname LIKE '" .. prefix .. "%' ORDER BY 1;")
  local list = {}
  for name in out:gmatch("[^\n]+") do list[#list + 1] = name end
  return list
end

local backups = h.tmpdir()
local r0, ZST_AGE = backup(backups, { "-r", PUB1, "-R", keys .. "/team.txt" })
assert(r0.code == 0, r0.stderr)
local r1, RAW_AGE = backup(backups, { "--compress", "none", "-r", PUB1 })
assert(r1.code == 0, r1.stderr)

t.test("backup -r/-R encrypts as it streams: .zst.age, fingerprints in the manifest, age -d opens it", function()
  t.match(ZST_AGE, "/%d+_local%.backup%.zst%.age$")
  t.match(RAW_AGE, "/%d+%-?%d*_local%.backup%.age$", "a second backup in the same second is STAMP-2_…")
  t.match(h.read(ZST_AGE), "^age%-encryption%.org/v1\n")
  local mtext = h.read(ZST_AGE .. ".manifest.json")
  local m = cjson.decode(mtext)
  -- what reveals the schema is sealed to the recipients (lib.trust); -i opens it
  t.eq(m.plain, nil, "the plain archive's digest is not public")
  t.eq(m.tables, nil, "nor the tables")
  t.match(m.private, "^%-%-%-%-%-BEGIN AGE ENCRYPTED FILE%-%-%-%-%-\n")
  m = require("lib.trust").open(m, crypto.read_identities(KEY2))
  t.eq(m.database, SRC_DB)
  t.eq(m.encryption.method, "age")
  t.eq(m.encryption.recipients, { crypto.fingerprint(PUB1), crypto.fingerprint(PUB2) })
  t.no_match(mtext, "AGE%-SECRET%-KEY")
  t.no_match(mtext, PUB1, "fingerprints, not the recipients themselves")
  for _, key in ipairs({ KEY1, KEY2 }) do
    local r = h.run({ "sh", "-c", string.format("age -d -i %s %s | zstd -d -c | sha256sum", key, ZST_AGE) })
    t.eq(r.code, 0, r.stderr)
    t.eq(r.stdout:match("^%x+"), m.plain.sha256, "age -d | zstd -d gives the plain archive back")
  end
  local plain = h.run({ "sh", "-c", string.format("age -d -i %s %s | head -c 5", KEY1, RAW_AGE) })
  t.eq(plain.stdout, "PGDMP")
  local bad = h.pgvault({ "backup", "--db", src_url, "--to", backups, "-r", "age1nope" })
  t.eq(bad.code, 2, "a usage error, naming the option")
  t.match(bad.stderr, "%-r/%-%-recipient: malformed age recipient")
end)

t.test("restore -i streams an encrypted backup into a new database; --jobs too", function()
  local url = PG.url("age_restore_test")
  h.dropdb("age_restore_test")
  local r = h.pgvault({ "restore", ZST_AGE, "--db", url, "-i", KEY2 })
  t.eq(r.code, 0, r.stderr)
  t.eq(fixture.fingerprint(url), source_fp)
  h.dropdb("age_restore_test")
  r = h.pgvault({ "restore", RAW_AGE, "--db", url, "-i", OTHER, "-i", KEY1, "--jobs", "2" },
    { env = { TMPDIR = h.tmpdir() } })
  t.eq(r.code, 0, r.stderr)
  t.eq(fixture.fingerprint(url), source_fp)
  t.eq(#databases("age_restore_test_"), 0, "no leftover databases")
  h.dropdb("age_restore_test")
end)

t.test("restore without the right key: a usage error or no match, nothing created", function()
  local url = PG.url("age_nokey_test")
  h.dropdb("age_nokey_test")
  local r = h.pgvault({ "restore", ZST_AGE, "--db", url })
  t.eq(r.code, 2)
  t.match(r.stderr, "is encrypted %(age%): give the identity file that opens it with %-i FILE")
  r = h.pgvault({ "restore", ZST_AGE, "--db", url, "-i", OTHER })
  t.eq(r.code, 1)
  t.match(r.stderr, "no identity matched any of the file's 2 recipient stanza")
  t.eq(#databases("age_nokey_test"), 0, "neither the database nor a temporary one exists")
end)

-- A copy of the raw encrypted backup (with its manifest) damaged by `damage`.
local function damaged_copy(damage)
  local dir = h.tmpdir()
  local name = RAW_AGE:match("[^/]+$")
  local copy = dir .. "/" .. name
  h.write(copy, damage(h.read(RAW_AGE)))
  h.write(copy .. ".manifest.json", h.read(RAW_AGE .. ".manifest.json"))
  return copy
end

t.test("a tampered or truncated encrypted backup aborts the restore and drops the new database", function()
  local size = #h.read(RAW_AGE)
  t.ok(size > 3 * 65536, "the archive spans several chunks: " .. size)
  local live = h.createdb("age_live_test")
  h.psql(live, "CREATE TABLE precious (v text); INSERT INTO precious VALUES ('still here');")
  local cases = {
    { "tampered", function(s)
      local i = size - 1000
      return s:sub(1, i - 1) .. string.char(s:byte(i) ~ 0x40) .. s:sub(i + 1)
    end, "payload chunk %d+ failed authentication: file is truncated or tampered" },
    { "truncated", function(s) return s:sub(1, 2 * 65552 + 300) end,
      "payload chunk 2 failed authentication: file is truncated or tampered" },
  }
  for _, c in ipairs(cases) do
    local copy = damaged_copy(c[2])
    for _, target in ipairs({ { "age_fresh_test", PG.url("age_fresh_test") }, { "age_live_test", live } }) do
      if target[1] == "age_fresh_test" then h.dropdb("age_fresh_test") end
      local r = h.pgvault({ "restore", copy, "--db", target[2], "-i", KEY1 })
      t.eq(r.code, 1, c[1] .. ": " .. r.stderr)
      -- "left as it was" only for a database that existed (it said so for both)
      local state = target[1] == "age_fresh_test" and "was not created" or "left as it was"
      t.match(r.stderr, "restore into " .. target[1] .. " failed %(database " .. target[1] .. " " .. state .. "%)")
      -- the stored digest (checked as the bytes pass) or the age layer finds it first
      t.ok(r.stderr:find(c[3]) or r.stderr:find("has [^:]* but its manifest says"), r.stderr)
      t.eq(#databases(target[1] .. "_restore_"), 0, c[1] .. ": the new database was dropped")
    end
    t.eq(#databases("age_fresh_test"), 0, c[1] .. ": no database was created")
    t.eq(h.psql(live, "SELECT v FROM precious;"), "still here\n", c[1] .. ": the live database is untouched")
  end
  h.dropdb("age_live_test")
end)

t.test("list -i tells which encrypted backups the key opens, reading only their headers", function()
  local dir = h.tmpdir()
  for _, f in ipairs(fs.listdir(backups)) do h.write(dir .. "/" .. f, h.read(backups .. "/" .. f)) end
  local r, plain = backup(dir, {})
  t.eq(r.code, 0, r.stderr)
  local out = h.pgvault({ "list", "--from", dir, "-i", KEY1 })
  t.eq(out.code, 0, out.stderr)
  t.match(out.stdout, "KEY")
  t.match(out.stdout, "ok +" .. SRC_DB .. " +yes +[^\n]*" .. ZST_AGE:match("[^/]+$"):gsub("%.", "%%."))
  t.match(out.stdout, "ok +" .. SRC_DB .. " +%- +[^\n]*" .. plain:match("[^/]+$"):gsub("%.", "%%."))
  out = h.pgvault({ "list", "--from", dir, "-i", OTHER, "--json" })
  local rows = cjson.decode(out.stdout)
  local seen = 0
  for _, row in ipairs(rows) do
    if row.encrypted then
      t.eq(row.key, "no", row.name)
      seen = seen + 1
    else
      t.eq(row.key, "-")
    end
  end
  t.eq(seen, 2)
end)

t.test("verify DIR/latest --database NAME -i: the database is read from the sealed manifests", function()
  -- regression test: verify did not open the private parts, so it found no backup of the database
  local r = h.pgvault({ "verify", backups .. "/latest", "--database", SRC_DB, "-i", KEY1 })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "the newest complete backup of database " .. SRC_DB .. " in .* is " .. RAW_AGE:gsub("%p", "%%%0"))
end)

t.test("…/latest --database NAME without -i, all backups encrypted: the message says to give -i", function()
  local r = h.pgvault({ "verify", backups .. "/latest", "--database", SRC_DB })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "no complete backup of database " .. SRC_DB .. " in .*: 2 encrypted ones keep their database "
    .. "in the sealed part of their manifest; give the identity that opens them with %-i FILE")
end)

t.test("…/latest --database NAME -i with an identity that opens none of them: the message says so", function()
  -- regression test: it said "no complete backup (one with a manifest)", as if the backups were incomplete
  local r = h.pgvault({ "restore", backups .. "/latest", "--db", PG.url(SRC_DB), "-i", OTHER })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "no complete backup of database " .. SRC_DB .. " in .*: 2 encrypted ones keep their database "
    .. "in the sealed part of their manifest; the identities given with %-i open none of them: give the identity "
    .. "of a recipient they were encrypted to")
  t.eq(databases(SRC_DB .. "_restore"), {}, "nothing was created")
end)
