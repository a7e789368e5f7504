-- lib.trust: whether a backup provably came from our backup job.
--
-- The bucket is not trusted: anyone holding the CI's S3 key can write it,
-- and encrypting to a public age recipient proves nothing (anyone can). So
-- a backup is accepted only when
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
-- Anything else fails with one line, kind "trust".
--
-- Keys
--   trust.keys(files) -> keys | nil     the trusted public keys: each FILE of
--       `files` (--trust FILE, repeatable) and each file named in
--       PGVAULT_TRUST (separated by ':'); nil when there are none.
--       keys[i] = {public_key = "RW...", key_id = "…", path = FILE}
--   trust.signing_key(path, {password_file = FILE}) -> handle   for --sign;
--       the secret stays in secure memory (close it when done)
--   trust.keygen(path, {password_file = FILE}) -> {public_key=, key_id=, pub_path=}
--       a new pair: the secret key file (0600, never overwritten) and PATH.pub
--
-- Writing a backup (in this order)
--   trust.BLOCK_SIZE                        blocks of a local file: 4 MiB
--   trust.block_size(dest, s3opts) -> n     the block size for a destination:
--       the upload's part size for s3://, else trust.BLOCK_SIZE
--   trust.block_digests(n) -> stage         the tap (stream.block_digests,
--       result key "blocks"): put it right before the sink, after every filter
--   trust.record(m, r)                      stored.block_size and stored.blocks
--       from the run's result r (r.blocks)
--   trust.seal(m, recipients)               an encrypted backup: moves what
--       reveals the schema (database, tables, archive, plain) into m.private,
--       age-encrypted (armored) to the backup's recipients
--   trust.sign(key, text, name) -> signature   of the manifest's exact text;
--       the trusted comment names the backup
--   trust.signature_path(manifest_path) -> manifest_path .. ".minisig"
--   The signature is written before the manifest (the manifest stays the
--   commit marker); `minisign -Vm NAME.manifest.json -p KEY.pub` verifies it.
--
-- Reading a backup
--   trust.check{keys=, manifest=TEXT, signature=TEXT|nil, object=NAME|PATH,
--       bytes=N|nil, where=} -> m, info     decodes (lib.manifest) and accepts
--       the manifest as above, else raises kind "trust"; bytes is the object's
--       size when known (stat, HEAD). info = {key_id=, trusted_comment=}
--   trust.status{keys=, manifest=, signature=, object=} -> "good"|"bad"|"none", why
--       list's SIG column; never raises
--   trust.verifier(m, where) -> stage       stream.verify_blocks for the stored
--       object (kind "trust"): the first stage after the source
--   trust.open(m, identities) -> m          an encrypted backup's private part
--       decrypted back into m (verify -i, restore -i); m as it was when there
--       is none
--   trust.require_encrypted(layer, where, m, identities)   "encrypted means
--       encrypted": raises kind "trust" when -i was given or m records
--       encryption and the object's outer layer (lib.layers) is not age
--   trust.unchecked(where, why)             the one warning that nothing
--       authenticated the backup (no --trust, or no manifest)
local crypto = require "pgvault.crypto"
local fs = require "pgvault.fs"
local pgvault = require "pgvault"
local stream = require "pgvault.stream"
local json = require "lib.json"
local manifest = require "lib.manifest"

local trust = {}

trust.BLOCK_SIZE = 4 << 20
trust.SIGNATURE_SUFFIX = ".minisig"
-- A block is held in memory while it is checked: a manifest asking for
-- more than this is refused rather than obeyed.
trust.MAX_BLOCK_SIZE = 512 << 20
-- What an encrypted backup keeps out of the manifest's public part.
trust.PRIVATE_FIELDS = { "database", "tables", "archive", "plain" }

local function fail(fmt, ...)
  pgvault.raise("trust", string.format(fmt, ...))
end

local function basename(s)
  return (tostring(s):gsub("/+$", ""):match("([^/]+)$")) or tostring(s)
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
    return (s3opts and s3opts.part_size) or (8 << 20)
  end
  return trust.BLOCK_SIZE
end

function trust.block_digests(block_size)
  return stream.block_digests { block_size = block_size, label = "blocks" }
end

function trust.record(m, r)
  local b = r and r.blocks
  if type(b) ~= "table" or type(b.blocks) ~= "table" then
    pgvault.raise("internal", "trust.record: the pipeline had no block_digests tap (trust.block_digests)")
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

function trust.sign(key, text, name)
  return key:sign(text, { untrusted_comment = "signature from pgvault key " .. key:key_id(),
    trusted_comment = string.format("pgvault backup %s, signed %s", basename(name),
      os.date("!%Y-%m-%dT%H:%M:%SZ")) })
end

-- Reading ------------------------------------------------------------------

-- The digests the manifest must record for the object to be checked at all.
local function require_digests(m, where)
  local s = type(m.stored) == "table" and m.stored or {}
  local missing = {}
  for _, k in ipairs({ "name", "bytes", "sha256", "block_size", "blocks" }) do
    if s[k] == nil then missing[#missing + 1] = "stored." .. k end
  end
  if #missing > 0 then
    fail("%s cannot be checked: its manifest lacks %s, so nothing vouches for its bytes", where,
      table.concat(missing, ", "))
  end
  if math.type(s.block_size) ~= "integer" or s.block_size < 1 or s.block_size > trust.MAX_BLOCK_SIZE then
    fail("%s cannot be checked: its manifest's block size is not 1 byte to %d MiB", where,
      trust.MAX_BLOCK_SIZE >> 20)
  end
  local want = (s.bytes + s.block_size - 1) // s.block_size
  if type(s.blocks) ~= "table" or #s.blocks ~= want then
    fail("%s cannot be checked: its manifest lists %s block digests for %d bytes in blocks of %d (%d expected)",
      where, type(s.blocks) == "table" and tostring(#s.blocks) or "no", s.bytes, s.block_size, want)
  end
  for i, d in ipairs(s.blocks) do
    if type(d) ~= "string" or not d:match("^%x+$") or #d ~= 64 then
      fail("%s cannot be checked: block digest %d of its manifest is not a SHA-256", where, i)
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
  if not ok then
    local why = type(info) == "table" and info.message or tostring(info)
    fail("%s: its manifest's signature is not acceptable: %s", where, why)
  end
  local m = manifest.decode(o.manifest, where .. "'s manifest")
  require_digests(m, where)
  local name = basename(o.object)
  if m.stored.name ~= name then
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
  return "bad", type(err) == "table" and err.message or tostring(err)
end

function trust.verifier(m, where)
  return stream.verify_blocks { block_size = m.stored.block_size, blocks = m.stored.blocks,
    what = where, kind = "trust", label = "verified_blocks" }
end

function trust.open(m, identities)
  if type(m.private) ~= "string" then return m end
  local ok, text = pcall(age_text, m.private, { decrypt = { identities = identities } })
  if not ok then
    fail("the private part of the manifest does not open with the identities given (%s)",
      type(text) == "table" and text.message or tostring(text))
  end
  local private = manifest.decode(text, "the private part of the manifest")
  for _, k in ipairs(trust.PRIVATE_FIELDS) do m[k] = private[k] end
  return m
end

function trust.require_encrypted(layer, where, m, identities)
  local given = identities and #identities > 0
  local recorded = m and type(m.encryption) == "table"
  if layer == "age" or not (given or recorded) then return end
  fail("%s is not encrypted, but %s: it is not the backup that was made", where,
    recorded and "its manifest records age encryption" or "an identity (-i) was given to decrypt it")
end

local warned = false
function trust.unchecked(where, why)
  if warned then return end
  warned = true
  log.warn("%s: %s, so nothing proves it came from your backup job: anyone who can write where it is "
    .. "stored could have replaced it (give --trust KEY.pub to accept only signed backups)", where, why)
end

return trust
