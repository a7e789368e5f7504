-- covers: scripts/backup.lua scripts/lib/trust.lua bindings/crypto/signing.c
-- backup --sign into a directory: what the signed manifest records, the
-- signature written before the manifest (which stays the commit marker),
-- minisign -V on it, a wrong signing password failing before anything is
-- dumped, verify and list with --trust, and the same from Lua
-- (lib.backup.run{sign=}, lib.verify.run{trust=}), as nightly calls them.
local t = require "harness.testing"
local h = require "harness.env"
local fixture = require "harness.dbfixture"
local cjson = require "cjson"
local crypto = require "pgvault.crypto"
local fs = require "pgvault.fs"
local naming = require "lib.naming"

local SRC = "sign_backup_src"
local src_url = fixture.create(SRC)
local keys = h.tmpdir()
assert(h.run({ "age-keygen", "-o", keys .. "/age.txt" }).code == 0)
local AGE_PUB = h.run({ "age-keygen", "-y", keys .. "/age.txt" }).stdout:match("%S+")
h.write(keys .. "/pw", "signing password\n")
fs.chmod(keys .. "/pw", 384)
local KEY = keys .. "/sign.key"
assert(h.pgvault({ "keygen", "--sign", "-o", KEY }).code == 0)
local TRUST = KEY .. ".pub"

local function backup(dir, args)
  local argv = { "backup", "--db", src_url, "--to", dir }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return h.pgvault(argv, { timeout = 120 })
end

t.test("the signed manifest names the object, its size, SHA-256 and blocks, the archive, database, time", function()
  local dir = h.tmpdir()
  local r = backup(dir, { "--sign", KEY })
  t.eq(r.code, 0, r.stderr)
  local path = r.stdout:match("([^\n]+)\n$")
  t.match(r.stderr, "signed the manifest with key %x+")
  local m = cjson.decode(h.read(path .. ".manifest.json"))
  t.eq(m.stored.name, path:match("[^/]+$"))
  t.eq(m.stored.bytes, fs.stat(path).size)
  t.match(m.stored.sha256, "^%x+$")
  t.eq(m.stored.block_size, 4 << 20)
  t.eq(#m.stored.blocks, (m.stored.bytes + (4 << 20) - 1) // (4 << 20))
  t.match(m.plain.sha256, "^%x+$")
  t.eq(m.database, SRC)
  t.match(m.created_at, "^%d%d%d%d%-%d%d%-%d%dT")
  local v = crypto.verify_signature(h.read(path .. ".manifest.json"), h.read(path .. ".manifest.json.minisig"),
    { crypto.read_public_key(TRUST) })
  t.eq(v.trusted_comment:match("^pgvault backup (%S+),"), path:match("[^/]+$"), "the trusted comment names it")
  local ms = h.run({ "minisign", "-V", "-p", TRUST, "-m", path .. ".manifest.json" })
  t.eq(ms.code, 0, ms.stderr)
  -- verify and list take it with --trust
  local vr = h.pgvault({ "verify", path, "--trust", TRUST })
  t.eq(vr.code, 0, vr.stderr)
  t.match(vr.stderr, "is signed by trusted key")
  t.no_match(vr.stderr, "nothing proves")
  local u = backup(dir, {})
  t.eq(u.code, 0, u.stderr)
  local l = h.pgvault({ "list", "--from", dir, "--trust", TRUST, "--json" })
  t.eq(l.code, 0, l.stderr)
  local rows = cjson.decode(l.stdout)
  t.eq({ rows[1].sig, rows[2].sig }, { "none", "good" })
  local unsigned = h.pgvault({ "verify", rows[1].path, "--trust", TRUST })
  t.eq(unsigned.code, 1)
  t.match(unsigned.stderr, "is not signed")
  -- without --trust: once, the warning that the signature was not checked
  local plainv = h.pgvault({ "verify", path })
  t.eq(plainv.code, 0, plainv.stderr)
  local _, n = plainv.stderr:gsub("is signed, but no key to check it was given", "")
  t.eq(n, 1, plainv.stderr)
end)

t.test("an encrypted signed backup: recipients' fingerprints public, the schema sealed, verify -i opens it", function()
  local dir = h.tmpdir()
  local r = backup(dir, { "--sign", KEY, "-r", AGE_PUB })
  t.eq(r.code, 0, r.stderr)
  local path = r.stdout:match("([^\n]+)\n$")
  local text = h.read(path .. ".manifest.json")
  local m = cjson.decode(text)
  t.eq(m.encryption.recipients, { crypto.fingerprint(AGE_PUB) })
  t.eq({ m.database, m.tables, m.plain, m.archive }, {})
  t.eq(text:find(SRC, 1, true), nil, "the database's name is nowhere in the public part")
  t.eq(text:find("customers", 1, true), nil, "nor a table's")
  t.eq(h.run({ "minisign", "-V", "-p", TRUST, "-m", path .. ".manifest.json" }).code, 0)
  local v = h.pgvault({ "verify", path, "-i", keys .. "/age.txt", "--trust", TRUST })
  t.eq(v.code, 0, v.stderr)
  t.match(v.stdout, "app%.customers +500 rows")
  t.match(v.stdout, "matches ")
end)

t.test("the signature is written before the manifest: when it cannot be, nothing is committed", function()
  local dir = h.tmpdir()
  -- the signatures of every name this backup could take are there already
  local now = os.time()
  for dt = 0, 30 do
    local stamp = naming.stamp(now + dt)
    h.write(dir .. "/" .. stamp .. "_local.backup.zst.manifest.json.minisig", "planted")
  end
  local r = backup(dir, { "--sign", KEY })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "already exists")
  for _, name in ipairs(fs.listdir(dir)) do
    t.match(name, "%.minisig$", "only the planted files are left: " .. name)
  end
end)

t.test("a wrong signing password fails before anything is dumped; the right one signs", function()
  local dir = h.tmpdir()
  local enc = keys .. "/enc.key"
  t.eq(h.pgvault({ "keygen", "--sign", "--password-file", keys .. "/pw", "-o", enc }, { timeout = 120 }).code, 0)
  h.write(keys .. "/wrong", "not it\n")
  fs.chmod(keys .. "/wrong", 384)
  local r = backup(dir, { "--sign", enc, "--sign-password-file", keys .. "/wrong" })
  t.eq(r.code, 1)
  t.match(r.stderr, "wrong password for the signing key")
  t.eq(fs.listdir(dir), {}, "nothing written")
  r = backup(dir, { "--sign", enc })
  t.eq(r.code, 1)
  t.match(r.stderr, "encrypted with a password, and none was given")
  t.eq(backup(dir, { "--sign-password-file", keys .. "/pw" }).code, 2, "a password without a key")
  r = backup(dir, { "--sign", enc, "--sign-password-file", keys .. "/pw" })
  t.eq(r.code, 0, r.stderr)
  local path = r.stdout:match("([^\n]+)\n$")
  t.eq(h.run({ "minisign", "-V", "-p", enc .. ".pub", "-m", path .. ".manifest.json" }).code, 0)
end)

t.test("from Lua, as nightly calls them: backup.run{sign=} and verify.run{trust=}", function()
  local dir = h.tmpdir()
  local code = string.format([[
    local b = require("lib.backup").run { db = %q, to = %q, sign = %q }
    local v = require("lib.verify").run { src = b.path, trust = { %q } }
    return b.path, v.matches]], src_url, dir, KEY, TRUST)
  local r = h.pgvault({ "-e", code }, { timeout = 120 })
  t.eq(r.code, 0, r.stderr)
  local path, matches = r.stdout:match("^(%S+)\t(%S+)\n$")
  t.eq(matches, "true")
  t.ok(fs.exists(path .. ".manifest.json.minisig"), "signed")
  t.match(r.stderr, "is signed by trusted key")
end)
