-- covers: scripts/download.lua scripts/lib/source.lua scripts/lib/catalog.lua
-- download s3://B/P/latest picks the backup restore and verify would pick
-- (the newest complete one; --database NAME among databases; with --trust
-- the newest a trusted key signed, each newer one passed over in a
-- warning line) and writes its manifest and signature beside the file, so
-- that `verify FILE --trust` checks it as in the bucket. Regression test:
-- before, `latest` was a literal key ("no object …/latest"), and --database
-- was an unknown option.
local t = require "harness.testing"
local h = require "harness.env"
local fs = require "pgvault.fs"
local s3 = require "pgvault.s3"
local s3h = require "harness.s3"
local fixture = require "harness.dbfixture"

local BUCKET = "download-latest"
local PREFIX = "s3://" .. BUCKET .. "/prod/"
local OLDER, NEWER = "download_latest_a", "download_latest_b"

local client = s3.client(s3h.direct())
s3h.make_bucket(BUCKET)
local ENV = s3h.env()

local function pgvault(args, opts)
  opts = opts or {}
  return h.pgvault(args, { env = ENV, timeout = 180, cwd = opts.cwd })
end

local keys = h.tmpdir()
assert(h.pgvault({ "keygen", "--sign", "-o", keys .. "/ours.key" }).code == 0)
local TRUST = keys .. "/ours.key.pub"

local function backup(db, ...)
  local url = h.createdb(db)
  h.psql(url, "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('" .. db .. "');")
  return fixture.backup(url, PREFIX, { ... }, { env = ENV, timeout = 180 })
end

local base, pat = fixture.base, fixture.literal

-- the older backup is signed by our key, the newer one (another database) is not
local SIGNED = backup(OLDER, "--sign", keys .. "/ours.key")
local UNSIGNED = backup(NEWER)
-- an incomplete one (no manifest), newest of all: latest never takes it
client:put(PREFIX .. "20991231235959_prod.backup.zst", "not a backup")

t.test("download …/latest: the newest complete backup, its manifest beside it", function()
  local dir = h.tmpdir()
  local r = pgvault({ "download", PREFIX .. "latest" }, { cwd = dir })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, base(UNSIGNED) .. "\n")
  t.match(r.stderr, "the newest complete backup in " .. pat(PREFIX:sub(1, -2)) .. " is " .. pat(UNSIGNED))
  t.eq(h.read(dir .. "/" .. base(UNSIGNED)), client:get(UNSIGNED))
  t.eq(h.read(dir .. "/" .. base(UNSIGNED) .. ".manifest.json"), client:get(UNSIGNED .. ".manifest.json"))
  t.eq(fs.exists(dir .. "/" .. base(UNSIGNED) .. ".manifest.json.minisig"), false, "it has no signature")
  t.eq(fs.exists(dir .. "/latest"), false)
end)

t.test("download …/latest --database NAME -o FILE: that database's backup, with manifest and signature", function()
  local dir = h.tmpdir()
  local file = dir .. "/" .. base(SIGNED)
  local r = pgvault({ "download", PREFIX .. "latest", "--database", OLDER, "-o", file })
  t.eq(r.code, 0, r.stderr)
  t.eq(h.read(file), client:get(SIGNED))
  t.eq(h.read(file .. ".manifest.json"), client:get(SIGNED .. ".manifest.json"))
  t.eq(h.read(file .. ".manifest.json.minisig"), client:get(SIGNED .. ".manifest.json.minisig"))
  local v = h.pgvault({ "verify", file, "--trust", TRUST })
  t.eq(v.code, 0, v.stderr)
  -- the same again: nothing is overwritten without -f
  r = pgvault({ "download", PREFIX .. "latest", "--database", OLDER, "-o", file })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "already exists: name another file with %-o FILE, or overwrite it with %-f")
  r = pgvault({ "download", PREFIX .. "latest", "--database", OLDER, "-o", file, "-f" })
  t.eq(r.code, 0, r.stderr)
end)

t.test("download …/latest --trust: the newest backup a trusted key signed, the newer one said", function()
  local dir = h.tmpdir()
  local r = pgvault({ "download", PREFIX .. "latest", "--trust", TRUST }, { cwd = dir })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, base(SIGNED) .. "\n")
  t.match(r.stderr, "passing over a backup for latest: " .. pat(UNSIGNED) .. "[^\n]*is not signed")
  t.match(r.stderr, "signed by a trusted key is " .. pat(SIGNED))
  t.eq(fs.exists(dir .. "/" .. base(UNSIGNED)), false)
end)

t.test("download …/latest --database of no backup: one line naming the databases there", function()
  local r = pgvault({ "download", PREFIX .. "latest", "--database", "nope", "-o", h.tmpdir() .. "/x" })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "no complete backup of database nope in .*" .. OLDER .. ", " .. NEWER)
end)

t.test("download --database without …/latest is a usage error", function()
  local r = pgvault({ "download", SIGNED, "--database", OLDER, "-o", h.tmpdir() .. "/x" })
  t.eq(r.code, 2, r.stderr)
  t.match(r.stderr, "%-%-database chooses among backups: use it with DIR/latest or s3://BUCKET/PREFIX/latest")
end)

h.dropdb(OLDER)
h.dropdb(NEWER)
