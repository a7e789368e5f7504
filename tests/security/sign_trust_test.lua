-- covers: scripts/lib/trust.lua bindings/crypto/signing.c
-- lib.trust, the decision itself: a manifest is accepted only with a good
-- signature by a trusted key, naming this very object, with every digest
-- recorded, and the object matching them block by block. Each refusal is
-- one line of kind "trust". Also: the private part of an encrypted
-- backup's manifest, "encrypted means encrypted", the trusted keys from
-- --trust and PGVAULT_TRUST, and minisign verifying what is signed.
local t = require "harness.testing"
local h = require "harness.env"
local crypto = require "pgvault.crypto"
local fs = require "pgvault.fs"
local stream = require "pgvault.stream"
local manifest = require "lib.manifest"
local trust = require "lib.trust"

local NAME = "20250102030405_prod.backup.zst.age"

-- Bytes that differ in every block.
local function object_of(n)
  local parts, i, len = {}, 0, 0
  while len < n do
    i = i + 1
    parts[#parts + 1] = string.format("%08d-", i) .. string.rep(string.char(65 + i % 26), 55)
    len = len + 64
  end
  return table.concat(parts):sub(1, n)
end

-- A signed backup as the backup workflow makes it: {object=, m=, text=, sig=, key=, keys=}.
local function signed_backup(opts)
  opts = opts or {}
  local kp = crypto.signing_keygen()
  local object = opts.object or object_of(10000)
  local r = stream.run { stream.string(object), stream.sha256 { label = "stored" }, trust.block_digests(1000),
    stream.discard() }
  local m = manifest.new { environment = "prod", database = "app",
    stored = { name = opts.name or NAME, bytes = r.stored.bytes, sha256 = r.stored.sha256 } }
  trust.record(m, r)
  if opts.edit then opts.edit(m) end
  local text = manifest.encode(m)
  return { object = object, m = m, text = text, sig = trust.signature(kp.key, text, opts.name or NAME), key = kp.key,
    keys = { crypto.public_key(kp.public_key) } }
end

local function check(b, over)
  local o = { keys = b.keys, manifest = b.text, signature = b.sig, object = "s3://bucket/prod/" .. NAME,
    bytes = #b.object, where = NAME }
  for k, v in pairs(over or {}) do o[k] = v end
  return trust.check(o)
end

local function refused(b, over, pattern)
  local err = t.raises(function() check(b, over) end, pattern)
  t.eq(err.kind, "trust", "kind of: " .. tostring(err))
  t.no_match(tostring(err), "\n", "one line")
  return err
end

-- Streams `object` through the verifier of `m`; returns ok, bytes released, error.
local function stream_through(m, object)
  local ok, res = pcall(stream.run, { stream.string(object),
    trust.verifier { manifest = m, name = NAME, trusted = true }, stream.buffer { max = 1 << 24 } })
  if ok then return true, res.buffer.data end
  return false, res.result and res.result.buffer and res.result.buffer.data or "", res
end

t.test("a signed manifest naming the object with all its digests is accepted; the object streams through", function()
  local b = signed_backup()
  local m, info = check(b)
  t.eq(m.stored.name, NAME)
  t.eq(m.stored.block_size, 1000)
  t.eq(#m.stored.blocks, 10)
  t.eq(info.key_id, b.key:key_id())
  t.match(info.trusted_comment, "^pgvault backup " .. NAME:gsub("%.", "%%.") .. ", signed %d%d%d%d%-")
  local ok, out = stream_through(m, b.object)
  t.ok(ok)
  t.eq(out == b.object, true)
  t.eq(trust.status { keys = b.keys, manifest = b.text, signature = b.sig, object = NAME }, "good")
end)

t.test("minisign verifies the manifest's signature with the public key file", function()
  local b = signed_backup()
  local d = h.tmpdir()
  h.write(d .. "/" .. NAME .. ".manifest.json", b.text)
  h.write(trust.signature_path(d .. "/" .. NAME .. ".manifest.json"), b.sig)
  h.write(d .. "/k.pub", b.key:public_key_file())
  local r = h.run({ "minisign", "-V", "-p", d .. "/k.pub", "-m", d .. "/" .. NAME .. ".manifest.json" })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "Trusted comment: pgvault backup " .. NAME:gsub("%.", "%%."))
end)

t.test("refused: no signature, an untrusted key, a manifest changed after signing, a legacy signature", function()
  local b = signed_backup()
  refused(b, { signature = false }, "is not signed %(no %.minisig beside its manifest%)")
  refused(b, { manifest = false }, "has no manifest")
  local other = crypto.signing_keygen()
  local err = refused(b, { keys = { crypto.public_key(other.public_key) } }, "not one of the trusted keys")
  t.match(tostring(err), b.key:key_id())
  -- the attacker's own key is not trusted however well it signs
  refused(b, { signature = trust.signature(other.key, b.text, NAME) }, "signed with key " .. other.key_id)
  local forged = b.text:gsub(b.m.stored.sha256, string.rep("0", 64))
  refused(b, { manifest = forged }, "signature is not acceptable: the signature by key .* does not verify")
  refused(b, { signature = b.key:sign(b.text, { legacy = true }) }, "legacy format")
  t.eq((trust.status { keys = b.keys, manifest = forged, signature = b.sig, object = NAME }), "bad")
  t.eq((trust.status { keys = b.keys, manifest = b.text, object = NAME }), "none")
end)

t.test("refused: the manifest names another object, or the object's size differs", function()
  local b = signed_backup()
  refused(b, { object = "s3://bucket/prod/20250102030405_staging.backup.zst.age" },
    "its signed manifest is for " .. NAME:gsub("%.", "%%.") .. ", not for this object")
  refused(b, { bytes = #b.object + 1 }, "has 10001 bytes, but its signed manifest says 10000")
  t.ok(check(b, { bytes = false }), "size unknown: checked as it streams")
end)

t.test("refused: a signed manifest without every digest never matches", function()
  for _, field in ipairs({ "sha256", "bytes", "name", "block_size", "blocks" }) do
    local b = signed_backup { edit = function(m) m.stored[field] = nil end }
    local err = refused(b, { bytes = false, object = NAME }, field == "name" and "lacks stored%.name" or
      ("lacks stored%." .. field))
    t.match(tostring(err), "nothing vouches for its bytes")
  end
  local b = signed_backup { edit = function(m) table.remove(m.stored.blocks) end }
  refused(b, {}, "lists 9 block digests for 10000 bytes in blocks of 1000 %(10 expected%)")
  b = signed_backup { edit = function(m) m.stored.block_size = 1 << 30 end }
  refused(b, {}, "block size is not 1 byte to 64 MiB")
end)

t.test("the verifier: a replaced object under an intact signed manifest releases none of the changed block", function()
  local b = signed_backup()
  local m = check(b)
  local replaced = b.object:sub(1, 4500) .. "X" .. b.object:sub(4502)
  local ok, released, err = stream_through(m, replaced)
  t.eq(ok, false)
  t.eq(#released, 4000, "blocks 0-3 only")
  t.eq(err.kind, "trust")
  t.match(tostring(err), "^" .. NAME:gsub("%.", "%%.") .. " does not match what was recorded: block 4")
  ok, released, err = stream_through(m, b.object .. "more")
  t.eq(ok, false)
  t.eq(released, b.object)
  t.match(tostring(err), "longer than what was recorded")
end)

t.test("seal and open: an encrypted backup's manifest keeps the schema private, the identity opens it", function()
  local a, other = crypto.keygen(), crypto.keygen()
  local m = manifest.new { database = "secret_app", environment = "prod",
    stored = { name = NAME, bytes = 1, sha256 = string.rep("a", 64) },
    plain = { bytes = 5, sha256 = string.rep("b", 64) }, archive = { entries = 3 },
    tables = { { schema = "hr", name = "salaries", rows = 12 } },
    encryption = { method = "age", recipients = { crypto.fingerprint(a.recipient) } } }
  trust.seal(m, { a.recipient })
  local text = manifest.encode(m)
  local public = manifest.decode(text, "m")
  for _, field in ipairs({ "database", "tables", "archive", "plain" }) do
    t.eq(public[field], nil, "the public part has no " .. field)
  end
  public.private = nil
  local rest = manifest.encode(public)
  for _, word in ipairs({ "secret_app", "salaries", "\"hr\"", string.rep("b", 64) }) do
    t.no_match(rest, word, "the public part does not show " .. word)
  end
  t.match(m.private, "^%-%-%-%-%-BEGIN AGE ENCRYPTED FILE%-%-%-%-%-\n")
  local back = trust.open(manifest.decode(text, "m"), { a.identity })
  t.eq(back.database, "secret_app")
  t.eq(back.tables, { { schema = "hr", name = "salaries", rows = 12 } })
  t.eq(back.plain.sha256, string.rep("b", 64))
  t.eq(manifest.row_counts(back), { ["hr.salaries"] = 12 })
  local err = t.raises(function() trust.open(manifest.decode(text, "m"), { other.identity }) end,
    "private part of the manifest does not open")
  t.eq(err.kind, "trust")
  local plain = manifest.new { database = "x" }
  t.eq(trust.seal(plain, {}).database, "x", "nothing to seal without recipients")
  t.eq(trust.open(plain, { a.identity }).database, "x")
end)

t.test("encrypted means encrypted: -i or a manifest recording age, and a file that is not age, is refused", function()
  local kg = crypto.keygen()
  local err = t.raises(function() trust.require_encrypted("zstd", "x.backup.zst.age", nil, { kg.identity }) end,
    "x.backup.zst.age is not encrypted, but an identity %(%-i%) was given to decrypt it")
  t.eq(err.kind, "trust")
  t.raises(function() trust.require_encrypted("pgdmp", "x", { encryption = { method = "age" } }, {}) end,
    "is not encrypted, but its manifest records age encryption")
  trust.require_encrypted("age", "x", { encryption = { method = "age" } }, { kg.identity })
  trust.require_encrypted("pgdmp", "x", { format = 1 }, {})
end)

t.test("trusted keys: --trust files and PGVAULT_TRUST, none is nil, a bad file names itself", function()
  local d = h.tmpdir()
  local a, b = crypto.signing_keygen(), crypto.signing_keygen()
  h.write(d .. "/a.pub", a.key:public_key_file())
  h.write(d .. "/b.pub", b.public_key .. "\n")
  local keys = trust.keys({ d .. "/a.pub", d .. "/b.pub" })
  t.eq(#keys, 2)
  t.eq(keys[1].key_id, a.key_id)
  t.eq(keys[2].path, d .. "/b.pub")
  local r = h.pgvault({ "-e", "local k = require('lib.trust').keys({ '" .. d .. "/a.pub' }) return #k, k[2].key_id, "
    .. "#require('lib.trust').keys(nil)" }, { env = { PGVAULT_TRUST = d .. "/b.pub:" .. d .. "/a.pub" } })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, "3\t" .. b.key_id .. "\t2\n")
  r = h.pgvault({ "-e", "return tostring(require('lib.trust').keys({}))" }, { env = { PGVAULT_TRUST = "" } })
  t.eq(r.stdout, "nil\n")
  h.write(d .. "/bad.pub", "not a key\n")
  t.raises(function() trust.keys({ d .. "/bad.pub" }) end, "public key file .*bad%.pub: not a minisign public key")
end)

t.test("the unchecked warning is said once", function()
  local r = h.pgvault({ "-e", "local tr = require('lib.trust') tr.unchecked('x.backup', 'it is not signed') "
    .. "tr.unchecked('x.backup', 'it is not signed') return 1" })
  t.eq(r.code, 0, r.stderr)
  local _, n = r.stderr:gsub("nothing proves it came from your backup job", "")
  t.eq(n, 1, r.stderr)
  t.match(r.stderr, "give %-%-trust KEY%.pub")
end)

t.test("keygen: the pair on disk, PATH.pub taken means no secret written", function()
  local d = h.tmpdir()
  local pair = trust.keygen(d .. "/s.key", { kdf = "interactive" })
  t.eq(pair.pub_path, d .. "/s.key.pub")
  t.eq(crypto.read_public_key(pair.pub_path).public_key, pair.public_key)
  t.eq(trust.signing_key(d .. "/s.key"):public_key(), pair.public_key)
  t.eq(fs.stat(d .. "/s.key").mode, 384)
  local err = t.raises(function() trust.keygen(d .. "/s.key") end, "already exists")
  t.eq(err.kind, "exists")
end)
