-- covers: scripts/restore.lua scripts/verify.lua scripts/lib/trust.lua
-- Issue 11's attacks by someone who can write where backups are stored (a
-- directory here; tests/security/sign_bucket_test.lua does a bucket). The
-- hostile archive's SQL creates a superuser role when it is restored by a
-- superuser (as production restores are): in every attack below that SQL
-- must not run at all, not merely have its restore fail afterwards. Each
-- test fails on the code before signed backups: that code restored these
-- archives, or had no --trust.
local t = require "harness.testing"
local h = require "harness.env"
local fixture = require "harness.dbfixture"
local cjson = require "cjson"
local fs = require "pgvault.fs"
local stream = require "pgvault.stream"
local manifest = require "lib.manifest"
local f = require "security.sign_fixtures"

local MARKER = "pgvault_pwned_sign_attacks"
local TARGET = "sign_attacks_target"
local keys = h.tmpdir()
local work = h.tmpdir()

local src_url = fixture.create("sign_attacks_src")
assert(h.run({ "age-keygen", "-o", keys .. "/age.txt" }).code == 0)
local AGE_KEY = keys .. "/age.txt"
local AGE_PUB = h.run({ "age-keygen", "-y", AGE_KEY }).stdout:match("%S+")
assert(h.pgvault({ "keygen", "--sign", "-o", keys .. "/sign.key" }).code == 0)
assert(h.pgvault({ "keygen", "--sign", "-o", keys .. "/evil.key" }).code == 0)
local TRUST = keys .. "/sign.key.pub"

local function backup(dir, args)
  local argv = { "backup", "--db", src_url, "--to", dir }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r = h.pgvault(argv)
  assert(r.code == 0, r.stderr)
  return r.stdout:match("([^\n]+)\n$")
end

-- Two signed, encrypted backups and an unsigned, unencrypted one.
local SIGNED = backup(work .. "/signed", { "--sign", keys .. "/sign.key", "-r", AGE_PUB })
local SIGNED2 = backup(work .. "/signed", { "--sign", keys .. "/sign.key", "-r", AGE_PUB })
local PLAIN = backup(work .. "/plain", {})
local SIGNED_RAW = backup(work .. "/raw", { "--sign", keys .. "/sign.key", "--compress", "none" })

-- The attacker's material: a hostile archive, compressed, encrypted to the
-- public recipient, and the same padded to the size of SIGNED.
f.drop_role(MARKER)
local HOSTILE = f.hostile_archive(work, "sign_attacks_hostile", MARKER)
local HOSTILE_ZST = f.zstd(HOSTILE, work .. "/hostile.backup.zst")
local HOSTILE_AGE = f.age(HOSTILE_ZST, AGE_PUB, work .. "/hostile.backup.zst.age")

local function name_of(path) return path:match("([^/]+)$") end
local function manifest_of(path) return path .. ".manifest.json" end
local function sig_of(path) return path .. ".manifest.json.minisig" end

-- A copy of a backup (archive, manifest, signature) in a fresh directory,
-- under `name` (its own by default).
local function copy(path, name)
  local dir = h.tmpdir()
  local to = dir .. "/" .. (name or name_of(path))
  h.write(to, h.read(path))
  h.write(manifest_of(to), h.read(manifest_of(path)))
  if fs.exists(sig_of(path)) then h.write(sig_of(to), h.read(sig_of(path))) end
  return to
end

local function restore(path, args)
  local argv = { "restore", path, "--db", f.superuser_url(TARGET) }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  return h.pgvault(argv, { timeout = 180 })
end

-- The attack failed as it should: exit 1, the message, the hostile SQL not
-- run, no database left behind.
local function refused(r, pattern, what)
  f.refused(t, r, pattern, what, MARKER, TARGET)
end

-- The block digests an attacker computes for a replacement object.
local function digests(path, block_size)
  local r = stream.run { stream.file_reader(path), stream.sha256 { label = "stored" },
    stream.block_digests { block_size = block_size, label = "blocks" }, stream.discard() }
  return r.stored, r.blocks.blocks
end

t.test("the hostile archive is a real threat: restored unchecked, its SQL runs as the restoring superuser", function()
  local r = restore(HOSTILE)
  local created = f.role_exists(MARKER)
  f.drop_role(MARKER)
  h.dropdb(TARGET)
  t.eq(r.code, 0, r.stderr)
  t.eq(created, true, "the marker role was created by the archive's SQL")
  t.match(r.stderr, "has no manifest: nothing about it was checked %(its size, digest, row counts, who made it%), "
    .. "so nothing proves it came from your backup job")
  t.no_match(r.stderr, "and the checksum", "a restore with no manifest does not claim a checksum was checked")
end)

t.test("a genuine signed backup restores with --trust: signature, name, size and every block checked", function()
  local r = restore(SIGNED, { "-i", AGE_KEY, "--trust", TRUST })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "is signed by trusted key %x+ %(pgvault backup " .. name_of(SIGNED):gsub("%p", "%%%0"))
  t.match(r.stderr, "row counts of %d+ tables match the manifest", "the private part was opened for the row check")
  t.no_match(r.stderr, "nothing proves")
  h.dropdb(TARGET)
end)

t.test("--jobs with --trust: the sessions load what was checked as it passes, never the file itself", function()
  -- a plain archive would otherwise be read by pg_restore -j after the check, where it lies; the
  -- streamed restore loads the checked stream, and pg_restore reads only a private copy of its TOC
  local r = restore(SIGNED_RAW, { "--trust", TRUST, "--jobs", "2" })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "on 2 sessions as it arrives")
  h.dropdb(TARGET)
end)

t.test("a swapped plain archive: restore -i and verify -i refuse it before anything runs", function()
  local path = copy(SIGNED)
  h.write(path, h.read(HOSTILE))
  refused(restore(path, { "-i", AGE_KEY }), "is not encrypted, but its manifest records age encryption",
    "manifest kept")
  local v = h.pgvault({ "verify", path, "-i", AGE_KEY })
  t.eq(v.code, 1, v.stderr)
  t.match(v.stderr, "is not encrypted, but its manifest records age encryption")
  -- with the manifest gone too, -i alone says it must be encrypted
  os.remove(manifest_of(path))
  os.remove(sig_of(path))
  refused(restore(path, { "-i", AGE_KEY }), "is not encrypted, but an identity %(%-i%) was given to decrypt it",
    "manifest removed")
end)

t.test("a re-encrypted archive with a forged manifest: unsigned, or signed by another key, is refused", function()
  local path = copy(SIGNED)
  h.write(path, h.read(HOSTILE_AGE))
  -- a manifest that matches the replacement in every digest, as anyone can write one
  local m = cjson.decode(h.read(manifest_of(path)))
  local stored, blocks = digests(path, m.stored.block_size)
  local forged = h.read(manifest_of(path))
    :gsub('"bytes": %d+,\n    "name"', '"bytes": ' .. stored.bytes .. ',\n    "name"')
    :gsub(m.stored.sha256, stored.sha256)
    :gsub('"blocks": %[[^%]]*%]', '"blocks": ["' .. table.concat(blocks, '", "') .. '"]')
  t.neq(forged, h.read(manifest_of(path)))
  h.write(manifest_of(path), forged)
  os.remove(sig_of(path))
  refused(restore(path, { "-i", AGE_KEY, "--trust", TRUST }), "is not signed %(no %.minisig beside its manifest%)",
    "unsigned forgery")
  -- signed with the attacker's own key
  local sig = h.pgvault({ "-e", string.format("return require('lib.trust').signature(require('lib.trust')"
    .. ".signing_key(%q), require('pgvault.fs').read_file(%q), 'x')", keys .. "/evil.key", manifest_of(path)) })
  t.eq(sig.code, 0, sig.stderr)
  h.write(sig_of(path), sig.stdout)
  local evil = h.read(keys .. "/evil.key.pub"):match("public key (%x+)")
  refused(restore(path, { "-i", AGE_KEY, "--trust", TRUST }), "signed with key " .. evil
    .. ", which is not one of the trusted keys", "signed by an untrusted key")
  -- PGVAULT_TRUST is a --trust as well
  local r = h.pgvault({ "restore", path, "--db", f.superuser_url(TARGET), "-i", AGE_KEY },
    { env = { PGVAULT_TRUST = TRUST }, timeout = 180 })
  refused(r, "not one of the trusted keys", "PGVAULT_TRUST")
end)

t.test("a replaced object under an intact signed manifest: the first block fails, pg_restore sees nothing", function()
  local path = copy(SIGNED)
  -- the same size as the genuine object: a padded, re-encrypted hostile archive
  local plain_size = #h.run({ "age", "-d", "-i", AGE_KEY, SIGNED }).stdout
  local padded = f.pad_zstd(f.zstd(HOSTILE, h.tmpdir() .. "/h.zst"), plain_size)
  local replacement = f.age(padded, AGE_PUB, h.tmpdir() .. "/h.age")
  t.eq(fs.stat(replacement).size, fs.stat(SIGNED).size, "the replacement is exactly as long")
  h.write(path, h.read(replacement))
  local r = restore(path, { "-i", AGE_KEY, "--trust", TRUST })
  refused(r, "does not match what was recorded: block 0 %(bytes 0 to %d+%) differs, so the object was replaced or "
    .. "damaged; none of it was used", "streamed")
  refused(restore(path, { "-i", AGE_KEY, "--trust", TRUST, "--jobs", "2" }), "block 0 .* differs", "--jobs 2")
  -- a replacement of another size is refused before a byte is read
  h.write(path, h.read(HOSTILE_AGE))
  refused(restore(path, { "-i", AGE_KEY, "--trust", TRUST }), "has %d+ bytes, but its signed manifest says %d+: the "
    .. "object was replaced or damaged", "another size")
end)

t.test("a signed manifest of another backup, put beside this object, is refused", function()
  -- the older genuine backup presented under the newer one's name
  local path = copy(SIGNED2, name_of(SIGNED))
  refused(restore(path, { "-i", AGE_KEY, "--trust", TRUST }), "its signed manifest is for "
    .. name_of(SIGNED2):gsub("%p", "%%%0") .. ", not for this object", "renamed")
end)

t.test("a manifest without its digests never matches: the replaced object is refused, not restored", function()
  local path = copy(PLAIN)
  h.write(path, h.read(HOSTILE_ZST))
  local m = manifest.decode(h.read(manifest_of(path)), "m")
  m.stored.sha256 = nil
  h.write(manifest_of(path), manifest.encode(m))
  refused(restore(path), "cannot be checked: its manifest records no SHA%-256", "no --trust")
  local v = h.pgvault({ "verify", path })
  t.eq(v.code, 1, v.stderr)
  t.match(v.stderr, "its manifest records no SHA%-256")
end)
