-- covers: scripts/backup.lua scripts/list.lua scripts/lib/trust.lua scripts/lib/s3backups.lua
-- Signed backups in a bucket, whose writers are not trusted: backup --sign
-- uploads NAME.manifest.json.minisig before the manifest; list --trust
-- shows good / bad / none; restore (streaming, and …/latest of an encrypted
-- backup whose manifest keeps its database private) and download take only
-- what a trusted key signed; an object replaced under its intact signed
-- manifest is refused at its first block, before pg_restore sees a byte,
-- and download leaves no file. minisign verifies what was uploaded.
local t = require "harness.testing"
local h = require "harness.env"
local fixture = require "harness.dbfixture"
local cjson = require "cjson"
local fs = require "pgvault.fs"
local s3 = require "pgvault.s3"
local f = require "security.sign_fixtures"

local MARKER = "pgvault_pwned_sign_bucket"
local TARGET = "sign_bucket_src" -- …/latest restores the newest backup of the target's name
local BUCKET = "sign-bucket"
local PREFIX = "s3://" .. BUCKET .. "/prod/"

local function direct()
  local c = h.s3()
  return { endpoint_url = c.endpoint, region = c.region, access_key_id = c.access_key,
    secret_access_key = c.secret_key }
end
local client = s3.client(direct())
s3.create_bucket("s3://" .. BUCKET, direct())
local ENV = h.s3().env

local src_url = fixture.create(TARGET)
local keys = h.tmpdir()
assert(h.run({ "age-keygen", "-o", keys .. "/age.txt" }).code == 0)
local AGE_KEY = keys .. "/age.txt"
local AGE_PUB = h.run({ "age-keygen", "-y", AGE_KEY }).stdout:match("%S+")
assert(h.pgvault({ "keygen", "--sign", "-o", keys .. "/sign.key" }).code == 0)
local TRUST = keys .. "/sign.key.pub"

local function pgvault(args, opts)
  local env = {}
  for k, v in pairs(ENV) do env[k] = v end
  for k, v in pairs(opts or {}) do env[k] = v end
  return h.pgvault(args, { env = env, timeout = 180 })
end

local function backup(args)
  local argv = { "backup", "--db", src_url, "--to", PREFIX }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r = pgvault(argv)
  assert(r.code == 0, r.stderr)
  return r.stdout:match("([^\n]+)\n$")
end

-- An unsigned backup, then a signed and encrypted one (the newest).
local UNSIGNED = backup({ "--compress", "none" })
local SIGNED = backup({ "--sign", keys .. "/sign.key", "-r", AGE_PUB, "--part-size", "5" })

f.drop_role(MARKER)
local work = h.tmpdir()
local HOSTILE = f.hostile_archive(work, "sign_bucket_hostile", MARKER)

local function refused(r, pattern, what)
  f.refused(t, r, pattern, what, MARKER, TARGET .. "_restore")
end

t.test("backup --sign to a bucket: the signature is uploaded, minisign verifies the manifest with it", function()
  local m = cjson.decode(client:get(SIGNED .. ".manifest.json"))
  t.eq(m.stored.block_size, 5 << 20, "blocks of a bucket's backup are its upload's parts")
  t.eq(#m.stored.blocks, 1)
  t.eq(m.database, nil, "the database is in the sealed private part")
  local d = h.tmpdir()
  h.write(d .. "/m.json", client:get(SIGNED .. ".manifest.json"))
  h.write(d .. "/m.json.minisig", client:get(SIGNED .. ".manifest.json.minisig"))
  local r = h.run({ "minisign", "-V", "-p", TRUST, "-m", d .. "/m.json" })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "Trusted comment: pgvault backup " .. SIGNED:match("[^/]+$"):gsub("%p", "%%%0"))
end)

t.test("list --trust: a SIG column, good / none, and bad for a manifest changed after signing", function()
  local r = pgvault({ "list", "--from", PREFIX, "--trust", TRUST, "--json" })
  t.eq(r.code, 0, r.stderr)
  local rows = cjson.decode(r.stdout)
  t.eq(#rows, 2)
  t.eq({ rows[1].path, rows[1].sig }, { SIGNED, "good" })
  t.eq({ rows[2].path, rows[2].sig }, { UNSIGNED, "none" })
  r = pgvault({ "list", "--from", PREFIX, "--trust", TRUST, "-i", AGE_KEY })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "^TIME %(UTC%) +ENV +SIZE +MANIFEST +SIG +DATABASE +KEY +FILE\n")
  t.match(r.stdout, "ok +good +" .. TARGET .. " +yes +" .. SIGNED:gsub("%p", "%%%0"), "-i opens the private part")
  -- a copy whose manifest was edited after signing
  local copy = PREFIX .. "20200101000000_prod.backup.zst.age"
  client:put(copy, client:get(SIGNED))
  client:put(copy .. ".manifest.json", (client:get(SIGNED .. ".manifest.json"):gsub('"level": 3', '"level": 4')))
  client:put(copy .. ".manifest.json.minisig", client:get(SIGNED .. ".manifest.json.minisig"))
  r = pgvault({ "list", "--from", PREFIX, "--trust", TRUST })
  t.match(r.stdout, "ok +bad +%- +" .. copy:gsub("%p", "%%%0"))
  client:delete(copy)
  client:delete(copy .. ".manifest.json")
  client:delete(copy .. ".manifest.json.minisig")
end)

t.test("restore …/latest --trust -i streams the newest signed backup (its database sealed in its manifest)", function()
  local r = pgvault({ "restore", PREFIX .. "latest", "--db", f.superuser_url(TARGET .. "_copy"),
    "--database", TARGET, "-i", AGE_KEY, "--trust", TRUST })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "the newest complete backup of database " .. TARGET .. " in .* is " .. SIGNED:gsub("%p", "%%%0"))
  t.match(r.stderr, "is signed by trusted key")
  t.match(r.stderr, "row counts of %d+ tables match the manifest")
  h.dropdb(TARGET .. "_copy")
end)

t.test("an object replaced under its signed manifest: refused at block 0, not restored, not downloaded", function()
  -- the bucket writer re-encrypts a hostile archive to the public recipient, padded to the same size
  local original = client:get(SIGNED)
  local plain_size = #h.run({ "age", "-d", "-i", AGE_KEY }, { stdin = original }).stdout
  local padded = f.pad_zstd(f.zstd(HOSTILE, work .. "/h.zst"), plain_size)
  local replacement = h.read(f.age(padded, AGE_PUB, work .. "/h.age"))
  t.eq(#replacement, #original)
  client:put(SIGNED, replacement)
  local ok, err = pcall(function()
    local r = pgvault({ "restore", SIGNED, "--db", f.superuser_url(TARGET), "-i", AGE_KEY, "--trust", TRUST })
    refused(r, "does not match what was recorded: block 0 %(bytes 0 to %d+%) differs", "streamed restore")
    r = pgvault({ "restore", SIGNED, "--db", f.superuser_url(TARGET), "-i", AGE_KEY }, { PGVAULT_TRUST = TRUST })
    refused(r, "block 0 .* differs", "PGVAULT_TRUST")
    local d = h.tmpdir()
    r = pgvault({ "download", SIGNED, "-o", d .. "/x.age", "--trust", TRUST })
    t.eq(r.code, 1, r.stderr)
    t.match(r.stderr, "block 0 .* differs")
    t.eq(fs.listdir(d), {}, "no file, not even a temporary one")
  end)
  client:put(SIGNED, original)
  if not ok then error(err, 0) end
end)

t.test("download --trust: the genuine object comes down whole; misuse is a usage error", function()
  local d = h.tmpdir()
  local r = pgvault({ "download", SIGNED, "-o", d .. "/x.age", "--trust", TRUST })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "is signed by trusted key")
  t.eq(h.read(d .. "/x.age") == client:get(SIGNED), true)
  r = pgvault({ "download", UNSIGNED, "-o", d .. "/y", "--trust", TRUST })
  t.eq(r.code, 1)
  t.match(r.stderr, "is not signed")
  t.eq(fs.exists(d .. "/y"), false)
  t.eq(pgvault({ "download", SIGNED, "--no-verify", "--trust", TRUST, "-o", d .. "/z" }).code, 2)
end)
