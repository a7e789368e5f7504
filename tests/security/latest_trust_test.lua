-- covers: scripts/lib/source.lua scripts/lib/catalog.lua scripts/lib/trust.lua scripts/lib/s3backups.lua
-- …/latest --trust is the newest complete backup of the database that a
-- trusted key signed, in a bucket and in a directory alike: a bucket writer
-- who plants newer backups (unsigned, signed by another key, a manifest
-- changed after signing, a signed backup copied under a newer name) cannot
-- block a restore with them. Each one passed over gets a warning line
-- saying which and why; with no trusted backup at all, one error line and
-- nothing restored. Regression test: before, latest took the newest backup
-- and then refused it, so restore and verify failed.
local t = require "harness.testing"
local h = require "harness.env"
local cjson = require "cjson"
local fs = require "pgvault.fs"
local s3 = require "pgvault.s3"
local s3h = require "harness.s3"
local f = require "security.sign_fixtures"
local fixture = require "harness.dbfixture"

local TARGET = "latest_trust_src"
local COPY_DB = "latest_trust_copy"
local BUCKET = "latest-trust"
local PREFIX = "s3://" .. BUCKET .. "/prod/"
local NOTHING = "s3://" .. BUCKET .. "/untrusted/" -- holds only backups no trusted key signed

local client = s3.client(s3h.direct())
s3h.make_bucket(BUCKET)
local ENV = s3h.env()

local function pgvault(args)
  return h.pgvault(args, { env = ENV, timeout = 180 })
end

local keys = h.tmpdir()
assert(h.pgvault({ "keygen", "--sign", "-o", keys .. "/ours.key" }).code == 0)
assert(h.pgvault({ "keygen", "--sign", "-o", keys .. "/theirs.key" }).code == 0)
local TRUST = keys .. "/ours.key.pub"

local src_url = h.createdb(TARGET)
h.psql(src_url, "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('old');")

local function backup(...)
  return fixture.backup(src_url, PREFIX, { ... }, { env = ENV, timeout = 180 })
end

local base, pat = fixture.base, fixture.literal

-- The good one, oldest; then, newer, what a bucket writer can plant.
local GOOD = backup("--sign", keys .. "/ours.key")
h.psql(src_url, "INSERT INTO notes VALUES ('new');")
local ALTERED = backup("--sign", keys .. "/ours.key")
local text = client:get(ALTERED .. ".manifest.json")
local altered = text:gsub('"level": 3', '"level": 4')
assert(altered ~= text, "the manifest records the zstd level")
client:put(ALTERED .. ".manifest.json", altered)
local UNSIGNED = backup()
local THEIRS = backup("--sign", keys .. "/theirs.key")
-- the good backup copied whole (object, manifest, signature) under a newer name
local COPIED = PREFIX .. base(GOOD):gsub("^%d+", "20991231235959")
for _, suffix in ipairs({ "", ".manifest.json", ".manifest.json.minisig" }) do
  client:put(COPIED .. suffix, client:get(GOOD .. suffix))
end

-- Every object under PREFIX whose name starts with one of `names`, copied
-- to `to` (a prefix, or a directory).
local function copy(names, to)
  for _, o in ipairs(client:list(PREFIX, { delimiter = "/" })) do
    for _, n in ipairs(names) do
      if base(o.key):sub(1, #n) == n then
        local url = "s3://" .. BUCKET .. "/" .. o.key
        if to:sub(1, 5) == "s3://" then client:put(to .. base(o.key), client:get(url))
        else h.write(to .. "/" .. base(o.key), client:get(url)) end
      end
    end
  end
end
local DIR = h.tmpdir()
copy({ base(GOOD), base(ALTERED), base(UNSIGNED), base(THEIRS), base(COPIED) }, DIR)
copy({ base(UNSIGNED), base(THEIRS) }, NOTHING)
local NOTHING_DIR = h.tmpdir()
copy({ base(UNSIGNED), base(THEIRS) }, NOTHING_DIR)

-- The four warnings, newest first, each naming the backup passed over (in
-- `place`) and why.
local function passed_over(r, place)
  local lines = {}
  for l in r.stderr:gmatch("[^\n]+") do
    if l:find("passing over a backup for latest", 1, true) then lines[#lines + 1] = l end
  end
  t.eq(#lines, 4, r.stderr)
  local function at(i, url, why)
    t.match(lines[i] or "", "^pgvault: warning: passing over a backup for latest: " .. pat(place .. base(url))
      .. ".*" .. why)
  end
  at(1, COPIED, "its signed manifest is for " .. pat(base(GOOD)) .. ", not for this object")
  at(2, THEIRS, "signed with key %x+, which is not one of the trusted keys")
  at(3, UNSIGNED, "is not signed")
  at(4, ALTERED, "the signature by key %x+ does not verify")
end

local function restored_notes()
  return h.psql(f.superuser_url(COPY_DB), "SELECT string_agg(body, ',' ORDER BY body) FROM notes;"):match("%S+")
end

local function exists(db)
  return h.psql(f.ADMIN, "SELECT count(*) FROM pg_database WHERE datname = '" .. db .. "';"):match("%d+") == "1"
end

for _, where in ipairs({ { "a bucket", PREFIX, NOTHING }, { "a directory", DIR .. "/", NOTHING_DIR .. "/" } }) do
  local what, place, none = where[1], where[2], where[3]

  t.test("restore …/latest --trust in " .. what .. ": the newest backup a trusted key signed, the rest said",
    function()
      local r = pgvault({ "restore", place .. "latest", "--db", f.superuser_url(COPY_DB), "--database", TARGET,
        "--trust", TRUST })
      t.eq(r.code, 0, r.stderr)
      passed_over(r, place)
      t.match(r.stderr, "the newest complete backup of database " .. TARGET .. " in .* is " .. pat(place .. base(GOOD)))
      t.match(r.stderr, "is signed by trusted key")
      t.eq(restored_notes(), "old", "the good backup was restored, none of the newer ones")
      h.dropdb(COPY_DB)
    end)

  t.test("verify …/latest --trust in " .. what .. ": the same choice", function()
    local r = pgvault({ "verify", place .. "latest", "--database", TARGET, "--trust", TRUST })
    t.eq(r.code, 0, r.stderr)
    passed_over(r, place)
    t.match(r.stderr, "is " .. pat(place .. base(GOOD)))
  end)

  t.test("restore …/latest --trust in " .. what .. " with no trusted backup: one error line, nothing restored",
    function()
      local r = pgvault({ "restore", none .. "latest", "--db", f.superuser_url(COPY_DB), "--database", TARGET,
        "--trust", TRUST })
      t.eq(r.code, 1, r.stderr)
      local errors = {}
      for l in r.stderr:gmatch("[^\n]+") do
        if not l:find("^pgvault: warning:") then errors[#errors + 1] = l end
      end
      t.eq(#errors, 1, r.stderr)
      t.match(errors[1], "^pgvault: restore: no complete backup of database " .. TARGET .. " in "
        .. pat(none:sub(1, -2)) .. " is signed by a trusted key %(2 passed over, see above%): check that "
        .. "%-%-trust names")
      t.match(r.stderr, "passing over a backup for latest: " .. pat(none .. base(THEIRS))
        .. ".*not one of the trusted")
      t.match(r.stderr, "passing over a backup for latest: " .. pat(none .. base(UNSIGNED)) .. " is not signed")
      t.eq(exists(COPY_DB), false, "no database created")
      t.eq(#f.databases(COPY_DB), 0, "no temporary database left")
    end)
end

t.test("without --trust, latest is still the newest complete backup", function()
  local r = pgvault({ "verify", PREFIX .. "latest", "--database", TARGET })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "is " .. pat(COPIED))
  t.eq(r.stderr:find("passing over", 1, true), nil)
end)

t.test("list --trust marks each: good, bad, none", function()
  for _, place in ipairs({ PREFIX, DIR }) do
    local r = pgvault({ "list", "--from", place, "--trust", TRUST, "--json" })
    t.eq(r.code, 0, r.stderr)
    local got = {}
    for _, row in ipairs(cjson.decode(r.stdout)) do got[#got + 1] = base(row.path) .. " " .. row.sig end
    t.eq(got, { base(COPIED) .. " bad", base(THEIRS) .. " bad", base(UNSIGNED) .. " none", base(ALTERED) .. " bad",
      base(GOOD) .. " good" }, place)
  end
  local r = pgvault({ "list", "--from", DIR, "--trust", TRUST })
  t.match(r.stdout, "ok +none .*" .. pat(base(UNSIGNED)))
  t.match(r.stdout, "ok +good .*" .. pat(base(GOOD)))
end)

t.test("a local file's size not its manifest's: passed over with a warning, with or without --trust", function()
  local d = h.tmpdir()
  for _, n in ipairs({ base(GOOD), base(ALTERED) }) do
    for _, suffix in ipairs({ "", ".manifest.json", ".manifest.json.minisig" }) do
      fs.write_file(d .. "/" .. n .. suffix, h.read(DIR .. "/" .. n .. suffix))
    end
  end
  h.write(d .. "/" .. base(ALTERED), h.read(DIR .. "/" .. base(ALTERED)) .. "x")
  local r = pgvault({ "verify", d .. "/latest", "--database", TARGET })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "passing over a backup for latest: " .. pat(d .. "/" .. base(ALTERED)) .. " has %d+ bytes, "
    .. "but its manifest records %d+: it was damaged or replaced")
  t.match(r.stderr, "is " .. pat(d .. "/" .. base(GOOD)))
end)

t.test("a failure after an in-place drop, with --trust, names a backup a trusted key signed to restore", function()
  -- regression test: the message named the newest other backup, here an unsigned one
  local name = "latest_trust_inplace"
  local url = h.createdb(name)
  h.psql(url, "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 50);")
  local d = h.tmpdir()
  local function dir_backup(...)
    local r = h.pgvault({ "-q", "backup", "--db", url, "--to", d, ... })
    assert(r.code == 0, r.stderr)
    return r.stdout:match("([^\n]+)\n$")
  end
  local good = dir_backup("--sign", keys .. "/ours.key")
  dir_backup() -- unsigned, newer
  local bad = dir_backup("--sign", keys .. "/ours.key")
  -- signed again after its row counts were changed: it passes --trust, and fails after the load
  local m = h.read(bad .. ".manifest.json"):gsub('"rows": 50', '"rows": 51')
  fs.remove(bad .. ".manifest.json")
  fs.remove(bad .. ".manifest.json.minisig")
  h.write(bad .. ".manifest.json", m)
  local s = h.run({ "minisign", "-S", "-s", keys .. "/ours.key", "-m", bad .. ".manifest.json", "-t", "test" })
  assert(s.code == 0, s.stderr)
  local r = h.pgvault({ "-q", "restore", bad, "--db", url, "--in-place", "--yes", "--trust", TRUST })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "database " .. name .. " was dropped before the restore and is now empty: restore a backup "
    .. "into it, e%.g%. 'pgvault restore " .. pat(good) .. " %-%-db URL'")
  h.dropdb(name)
end)

h.dropdb(TARGET)
