-- lib.trust: whether a backup provably came from our backup job.
--
-- The bucket is not trusted: anyone holding the CI's S3 key can write it,
-- and encrypting to a public age recipient proves nothing (anyone can). So
-- with trusted keys (--trust KEY.pub, PGVAULT_TRUST) a backup is accepted
-- only when
--   * NAME.manifest.json.minisig, a minisign signature (Ed25519 over the
--     BLAKE2b-512 of the manifest's exact bytes, "ED"), verifies with one of
--     the trusted public keys;
--   * the manifest names this very object (stored.name) and records all of
--     its digests: stored.bytes, stored.sha256, stored.block_size and
--     stored.blocks (the SHA-256 of each block; a manifest missing any never
--     matches);
--   * the object matches them: its size before a byte is read, each block as
--     it streams (trust.verifier releases a block only once its digest
--     matched, so no byte of a replaced object reaches pg_restore or psql),
--     and the whole object's SHA-256 at the end.
-- Anything else fails with one line, kind "trust". Without trusted keys a
-- workflow says once that nothing proved who made the backup.
--
-- Workflow steps (each one call in scripts/backup.lua, restore.lua, verify.lua)
--   cli.with_options(backup.CLI, trust.SIGN_OPTIONS)    --sign KEY, --sign-password-file PW
--   cli.with_options(restore.CLI, trust.TRUST_OPTIONS)  --trust KEY.pub (repeatable)
--   local signer <close> = trust.signer(o)     the signing key, read before anything is dumped; nil
--                                               without --sign
--   trust.blocks(job)                          a stage of the backup's list, right before the sink: the
--                                               SHA-256 of each block as stored
--   trust.seal_and_sign(job, dest, m, r, signer)   the block digests recorded in m; for an encrypted
--       backup what reveals the schema sealed to its recipients; with a signer, the signature of
--       manifest.encode(m) written beside the archive. The last change to m before dest:commit(m):
--       a step that changes m after it makes the signature fail (restore --trust refuses the backup)
--   trust.authenticate(job, src)               the backup's origin (with trusted keys: signature, name,
--       size, digests; else the warning), "encrypted means encrypted", the private part opened
--   trust.verifier(src)                        a stage right after src:reader(): each block checked
--                                               before it goes on (false unless authenticated)
--   trust.authenticate_object(client, url, o) -> src | nil   download: with --trust, the object's
--       manifest checked as above ({name=, manifest=, trusted=} for trust.verifier); nil without keys
--   trust.annotate(backups, o) -> bool         list: b.sig = good / bad / none with --trust (true
--       then); with -i, encrypted manifests' private parts opened (their database shown)
--   trust.accepts(files, s3opts) -> accept | nil   …/latest (lib.source): accept(b) -> the signed
--       manifest, or nil and why, for a listed backup b (lib.catalog, lib.s3backups), checked as
--       trust.check does (its size too); nil without trusted keys
--
-- The pieces
--   trust.keys(files) -> keys | nil           the trusted public keys: each FILE of `files` and each
--       file named in PGVAULT_TRUST (separated by ':'); nil when there are none.
--       keys[i] = {public_key = "RW...", key_id = "…", path = FILE}
--   trust.signing_key(path, {password_file = FILE, password_option = "--flag"}) -> handle (the secret stays
--                                             in secure memory; a sealed key and no password: the error names --flag)
--   trust.keygen(path, {password_file = FILE}) -> {public_key=, key_id=, pub_path=}
--       a new pair: the secret key file (0600, never overwritten) and PATH.pub
--   trust.BLOCK_SIZE, trust.block_size(dest, s3opts) -> n   4 MiB for a file; the part size for s3://
--   trust.block_digests(n) -> stage           stream.block_digests, result key "blocks"
--   trust.record(m, r)                        stored.block_size and stored.blocks from r.blocks
--   trust.seal(m, recipients)                 database, tables, archive, plain -> m.private (armored age)
--   trust.signature(key, text, name) -> text  minisign signature; the trusted comment names the backup
--   trust.signature_path(manifest_path)       manifest_path .. ".minisig"
--   trust.check{keys=, manifest=TEXT, signature=TEXT|nil, object=NAME|PATH, bytes=N|nil, where=}
--       -> m, {key_id=, trusted_comment=}     raises kind "trust" unless accepted as above
--   trust.status{keys=, manifest=, signature=, object=} -> "good"|"bad"|"none", why   (list's SIG)
--   trust.open(m, identities) -> m            the private part decrypted back into m
--   trust.require_encrypted(layer, where, m, identities)
--   trust.unchecked(where, why)               the one warning when nothing authenticated a backup
local crypto = require "pgvault.crypto"
local fs = require "pgvault.fs"
local pgvault = require "pgvault"
local stream = require "pgvault.stream"
local json = require "lib.json"
local layers = require "lib.layers"
local manifest = require "lib.manifest"
local naming = require "lib.naming"

local trust = {}

trust.BLOCK_SIZE = 4 << 20
trust.SIGNATURE_SUFFIX = ".minisig"
-- A block is held in memory while it is checked: no more than this.
trust.MAX_BLOCK_SIZE = 64 << 20
-- What an encrypted backup keeps out of the manifest's public part.
trust.PRIVATE_FIELDS = { "database", "tables", "archive", "plain" }

trust.SIGN_OPTIONS = {
  { "sign", nil, "KEY", "sign the manifest with this minisign secret key (NAME.manifest.json.minisig; "
    .. "'pgvault keygen --sign' makes one)" },
  { "sign-password-file", nil, "PW", "the signing key's password is the first line of PW" },
}

trust.TRUST_OPTIONS = {
  { "trust", nil, "KEY.pub", "accept only backups whose manifest is signed by this minisign public key "
    .. "(also PGVAULT_TRUST: files separated by ':')", multi = true },
}

local function fail(fmt, ...)
  pgvault.raise("trust", string.format(fmt, ...))
end

local function basename(s)
  return (tostring(s):gsub("/+$", ""):match("([^/]+)$")) or tostring(s)
end

local function message(err)
  return type(err) == "table" and err.message or tostring(err)
end

function trust.signature_path(manifest_path)
  return manifest_path .. trust.SIGNATURE_SUFFIX
end

-- Keys -------------------------------------------------------------------

function trust.keys(files)
  local paths = {}
  for _, f in ipairs(files or {}) do paths[#paths + 1] = f end
  for f in (os.getenv("PGVAULT_TRUST") or ""):gmatch("[^:]+") do paths[#paths + 1] = f end
  if #paths == 0 then return nil end
  local keys = {}
  for _, p in ipairs(paths) do keys[#keys + 1] = crypto.read_public_key(p) end
  return keys
end

local function password(opts)
  return opts and opts.password_file and crypto.read_passphrase(opts.password_file) or nil
end

function trust.signing_key(path, opts)
  local pw = password(opts)
  local ok, key = pcall(crypto.read_signing_key, path, { password = pw })
  if pw then pw:close() end
  if not ok and not pw and opts and opts.password_option and pgvault.is_error(key) and key.failure == "password" then
    error(pgvault.error(key.kind, string.format("%s: give the file holding its password with %s FILE", key.message,
      opts.password_option), { failure = key.failure }), 0)
  end
  if not ok then error(key, 0) end
  return key
end

function trust.keygen(path, opts)
  local pub = path .. ".pub"
  if fs.exists(pub) then
    pgvault.raise("exists", string.format("%s already exists: refusing to overwrite a key file; choose another "
      .. "name or remove it first", pub), { path = pub })
  end
  local pw = password(opts)
  local kp = crypto.signing_keygen()
  local ok, err = pcall(kp.key.save, kp.key, path, { password = pw, kdf = opts and opts.kdf })
  if ok then
    ok, err = pcall(fs.write_file, pub, kp.key:public_key_file(), { no_clobber = true, mode = 420 })
    -- a secret key without its public half is of no use to anyone
    if not ok then os.remove(path) end
  end
  if pw then pw:close() end
  kp.key:close()
  if not ok then error(err, 0) end
  return { public_key = kp.public_key, key_id = kp.key_id, pub_path = pub }
end

-- Writing ------------------------------------------------------------------

function trust.block_size(dest, s3opts)
  if type(dest) == "string" and dest:sub(1, 5) == "s3://" then
    return math.min((s3opts and s3opts.part_size) or (8 << 20), trust.MAX_BLOCK_SIZE)
  end
  return trust.BLOCK_SIZE
end

function trust.block_digests(block_size)
  return stream.block_digests { block_size = block_size, label = "blocks" }
end

function trust.record(m, r)
  local b = r and r.blocks
  if type(b) ~= "table" or type(b.blocks) ~= "table" then
    pgvault.raise("internal", "the backup's stages have no block digests (trust.blocks): the manifest cannot "
      .. "record them")
  end
  m.stored = m.stored or {}
  m.stored.block_size = b.block_size
  m.stored.blocks = json.array(b.blocks)
  return m
end

local function age_text(text, opts)
  local r = stream.run { stream.string(text), opts.decrypt and crypto.decryptor(opts.decrypt)
    or crypto.encryptor(opts.encrypt), stream.buffer { max = manifest.MAX_BYTES } }
  return r.buffer.data
end

function trust.seal(m, recipients)
  if not recipients or #recipients == 0 then return m end
  local private = { format = manifest.FORMAT }
  for _, k in ipairs(trust.PRIVATE_FIELDS) do
    private[k] = m[k]
    m[k] = nil
  end
  m.private = age_text(json.encode(private), { encrypt = { recipients = recipients, armor = true } })
  return m
end

function trust.signature(key, text, name)
  return key:sign(text, { untrusted_comment = "signature from pgvault key " .. key:key_id(),
    trusted_comment = string.format("pgvault backup %s, signed %s", basename(name), naming.iso8601()) })
end

-- Reading ------------------------------------------------------------------

-- Whether the manifest records every digest the checks need; raises `kind`.
local function require_digests(m, where, kind)
  local function refuse(fmt, ...) pgvault.raise(kind, string.format(fmt, ...)) end
  local s = type(m.stored) == "table" and m.stored or {}
  local missing = {}
  for _, k in ipairs({ "name", "bytes", "sha256", "block_size", "blocks" }) do
    if s[k] == nil then missing[#missing + 1] = "stored." .. k end
  end
  if #missing > 0 then
    refuse("%s cannot be checked: its manifest lacks %s, so nothing vouches for its bytes", where,
      table.concat(missing, ", "))
  end
  if math.type(s.block_size) ~= "integer" or s.block_size < 1 or s.block_size > trust.MAX_BLOCK_SIZE then
    refuse("%s cannot be checked: its manifest's block size is not 1 byte to %d MiB", where,
      trust.MAX_BLOCK_SIZE >> 20)
  end
  local want = (s.bytes + s.block_size - 1) // s.block_size
  if type(s.blocks) ~= "table" or #s.blocks ~= want then
    refuse("%s cannot be checked: its manifest lists %s block digests for %d bytes in blocks of %d (%d expected)",
      where, type(s.blocks) == "table" and tostring(#s.blocks) or "no", s.bytes, s.block_size, want)
  end
  for i, d in ipairs(s.blocks) do
    if type(d) ~= "string" or not d:match("^%x+$") or #d ~= 64 then
      refuse("%s cannot be checked: block digest %d of its manifest is not a SHA-256", where, i)
    end
  end
end

function trust.check(o)
  local where = o.where or tostring(o.object)
  if not o.keys or #o.keys == 0 then
    pgvault.raise("internal", "trust.check needs the trusted keys (trust.keys)")
  end
  if type(o.manifest) ~= "string" then
    fail("%s has no manifest: nothing vouches for it, and --trust accepts only signed backups", where)
  end
  if type(o.signature) ~= "string" then
    fail("%s is not signed (no %s beside its manifest): --trust accepts only backups made with backup --sign",
      where, trust.SIGNATURE_SUFFIX)
  end
  local ok, info = pcall(crypto.verify_signature, o.manifest, o.signature, o.keys, { legacy = false })
  if not ok then fail("%s: its manifest's signature is not acceptable: %s", where, message(info)) end
  local m = manifest.decode(o.manifest, where .. "'s manifest")
  require_digests(m, where, "trust")
  if m.stored.name ~= basename(o.object) then
    fail("%s: its signed manifest is for %s, not for this object: it was copied from another backup",
      where, tostring(m.stored.name))
  end
  if o.bytes and o.bytes ~= m.stored.bytes then
    fail("%s has %d bytes, but its signed manifest says %d: the object was replaced or damaged", where,
      o.bytes, m.stored.bytes)
  end
  return m, { key_id = info.key_id, trusted_comment = info.trusted_comment }
end

function trust.status(o)
  if type(o.signature) ~= "string" then return "none", "not signed" end
  local ok, err = pcall(trust.check, o)
  if ok then return "good" end
  return "bad", message(err)
end

function trust.open(m, identities)
  if type(m) ~= "table" or type(m.private) ~= "string" then return m end
  local ok, text = pcall(age_text, m.private, { decrypt = { identities = identities } })
  if not ok then
    fail("the private part of the manifest does not open with the identities given (%s)", message(text))
  end
  local private = manifest.decode(text, "the private part of the manifest")
  for _, k in ipairs(trust.PRIVATE_FIELDS) do m[k] = private[k] end
  return m
end

function trust.require_encrypted(layer, where, m, identities)
  local given = identities and #identities > 0
  local recorded = type(m) == "table" and type(m.encryption) == "table"
  if layer == "age" or not (given or recorded) then return end
  fail("%s is not encrypted, but %s: it is not the backup that was made", where,
    recorded and "its manifest records age encryption" or "an identity (-i) was given to decrypt it")
end

local warned = false
function trust.unchecked(where, why)
  if warned then return end
  warned = true
  log.warn("%s %s, so nothing proves it came from your backup job: anyone who can write where it is stored "
    .. "could have replaced it (give --trust KEY.pub to accept only backups signed by your key)", where, why)
end

-- Workflow steps -------------------------------------------------------------

function trust.signer(o)
  if not o.sign then
    if o.sign_password_file then pgvault.raise("usage", "--sign-password-file only goes with --sign KEY") end
    return nil
  end
  return trust.signing_key(o.sign, { password_file = o.sign_password_file, password_option = "--sign-password-file" })
end

function trust.blocks(job)
  return trust.block_digests(trust.block_size(job.to, job.s3))
end

function trust.seal_and_sign(job, dest, m, r, signer)
  trust.record(m, r)
  if m.encryption then trust.seal(m, job.recipients) end
  if signer then
    -- manifest.encode is deterministic: dest:commit(m) writes these bytes
    local text = manifest.encode(m)
    dest:write_beside(naming.MANIFEST_SUFFIX .. trust.SIGNATURE_SUFFIX, trust.signature(signer, text, dest.name))
    log.info("signed the manifest with key %s", signer:key_id())
  end
  return m
end

-- An object's manifest text, its signature's (nil when absent) and its
-- size, as they are now in the bucket.
local function bucket_texts(client, url)
  local murl = naming.manifest_path(url)
  local text = client:head(murl) and client:get(murl) or nil
  local sig = client:head(trust.signature_path(murl)) and client:get(trust.signature_path(murl)) or nil
  local info = client:head(url)
  return text, sig, info and info.size
end

-- The same for a backup being read (lib.source).
local function read_beside(src)
  if src.remote then
    local client <close> = require("pgvault.s3").client(src.s3)
    return bucket_texts(client, src.url)
  end
  local sig_path = src.manifest_path and trust.signature_path(src.manifest_path)
  return src.manifest_text, sig_path and fs.exists(sig_path) and fs.read_file(sig_path) or nil, src.size
end

-- Whether the backup being read has a signature beside its manifest (a
-- HEAD in a bucket: nothing is downloaded when it will not be checked).
local function signed_beside(src)
  if not src.manifest_path then return false end
  local sig_path = trust.signature_path(src.manifest_path)
  if not src.remote then return fs.exists(sig_path) end
  local client <close> = require("pgvault.s3").client(src.s3)
  return client:head(sig_path) ~= nil
end

-- Without trusted keys: whatever manifest there is must at least record the
-- object's size and SHA-256, and the warning says what was not checked.
local function unsigned(src)
  local m = src.manifest
  if not m then
    trust.unchecked(src.name, "has no manifest: nothing about it was checked (its size, digest, row counts, "
      .. "who made it)")
    return
  end
  local s = type(m.stored) == "table" and m.stored or {}
  if s.bytes == nil or s.sha256 == nil then
    pgvault.raise("verify", string.format("%s cannot be checked: its manifest records no %s (a pgvault manifest "
      .. "always does: it was damaged or forged)", src.name, s.bytes == nil and "size" or "SHA-256"))
  end
  if s.blocks ~= nil then require_digests(m, src.name, "verify") end
  trust.unchecked(src.name, signed_beside(src) and "is signed, but no key to check it was given" or "is not signed")
end

function trust.authenticate(job, src)
  local keys = trust.keys(job.trust)
  if keys then
    local text, sig, size = read_beside(src)
    local m, info = trust.check { keys = keys, manifest = text, signature = sig, object = src.name, bytes = size,
      where = src.name }
    src.manifest, src.manifest_text, src.trusted = m, text, info
    src.layers = layers.require(src.head, src.name, m)
    log.info("%s is signed by trusted key %s (%s)", src.name, info.key_id, info.trusted_comment)
  else
    unsigned(src)
  end
  local ids = job.identities or layers.read_identities(job.identity)
  job.identities = ids
  trust.require_encrypted(src.layers[1], src.name, src.manifest, ids)
  if src.manifest and src.manifest.private and #ids > 0 then trust.open(src.manifest, ids) end
end

-- The manifest's text and its signature's (nil when absent) of a listed
-- backup b (lib.catalog, lib.s3backups).
local function listed_texts(b, client)
  if b.key then return bucket_texts(client, b.path) end
  local murl = naming.manifest_path(b.path)
  local sig = trust.signature_path(murl)
  return fs.exists(murl) and fs.read_file(murl) or nil, fs.exists(sig) and fs.read_file(sig) or nil
end

function trust.annotate(list, o)
  local keys = trust.keys(o.trust)
  local ids = #(o.identity or {}) > 0 and layers.read_identities(o.identity) or nil
  local client = keys and o.s3 and require("pgvault.s3").client(o.s3) or nil
  for _, b in ipairs(list) do
    if keys then
      local ok, text, sig = pcall(listed_texts, b, client)
      b.sig = ok and trust.status { keys = keys, manifest = text, signature = sig, object = b.name } or "bad"
    end
    if ids and b.manifest and b.manifest.private then pcall(trust.open, b.manifest, ids) end
  end
  if client then client:close() end
  return keys ~= nil
end

function trust.accepts(files, s3opts)
  local keys = trust.keys(files)
  if not keys then return nil end
  return function(b)
    -- a server that fails to answer raises: an outage must not pass a backup over
    local client <close> = b.key and require("pgvault.s3").client(s3opts) or nil
    local text, sig = listed_texts(b, client)
    local ok, m = pcall(trust.check, { keys = keys, manifest = text, signature = sig, object = b.name, bytes = b.size,
      where = b.path })
    if ok then return m end
    if not (pgvault.is_error(m) and (m.kind == "trust" or m.kind == "verify")) then error(m, 0) end
    return nil, m.message
  end
end

function trust.authenticate_object(client, url, o)
  local keys = trust.keys(o.trust)
  if not keys then return nil end
  local text, sig, size = bucket_texts(client, url)
  local m, info = trust.check { keys = keys, manifest = text, signature = sig, object = url, bytes = size,
    where = url }
  log.info("%s is signed by trusted key %s (%s)", url, info.key_id, info.trusted_comment)
  return { name = url, manifest = m, trusted = info }
end

function trust.verifier(src)
  if not (src and src.trusted) then return false end
  local s = src.manifest.stored
  return stream.verify_blocks { block_size = s.block_size, blocks = s.blocks, what = src.name, kind = "trust",
    label = "verified_blocks" }
end

return trust
