-- Layers of a stored backup, recognised by their magic bytes and peeled as
-- the bytes stream: age encryption ("age-encryption.org/v1", or the ASCII
-- armor line), zstd compression (28 B5 2F FD), then the pg_dump archive
-- (PGDMP). What lies under an age layer cannot be seen before decrypting,
-- so the name decides there (NAME.backup.zst.age is zstd inside).
local pgvault = require "pgvault"
local stream = require "pgvault.stream"

local layers = {}

local AGE = "age-encryption.org/v1"
local ARMOR = "-----BEGIN AGE ENCRYPTED FILE-----"
local ZSTD = "\x28\xB5\x2F\xFD"

-- The layer that `head` (the first bytes) starts with: "age", "zstd",
-- "pgdmp" or nil.
function layers.sniff(head)
  if head:sub(1, #AGE) == AGE or head:sub(1, #ARMOR) == ARMOR then return "age" end
  if head:sub(1, 4) == ZSTD then return "zstd" end
  if head:sub(1, 5) == "PGDMP" then return "pgdmp" end
  return nil
end

-- The layers from the outside in, e.g. {"age", "zstd", "pgdmp"}.
function layers.detect(head, name)
  local outer = layers.sniff(head or "")
  if outer == "pgdmp" then return { "pgdmp" } end
  if outer == "zstd" then return { "zstd", "pgdmp" } end
  if outer == "age" then
    local inner = (name or ""):gsub("%.age$", "")
    if inner:match("%.zst$") then return { "age", "zstd", "pgdmp" } end
    return { "age", "pgdmp" }
  end
  return nil
end

local function optional(name)
  local ok, mod = pcall(require, name)
  return ok and mod or nil
end

-- Filter stages that peel `list` (from layers.detect) down to the archive,
-- in pipeline order. opts: identity_files (age identity files),
-- passphrase. Raises a clear error when this build cannot peel a layer.
function layers.stages(list, opts)
  opts = opts or {}
  local out = {}
  for _, layer in ipairs(list) do
    if layer == "age" then
      local crypto = optional("pgvault.crypto")
      if not crypto or not crypto.decryptor then
        pgvault.raise("verify", "the backup is age-encrypted and this build has no decryptor (pgvault.crypto)")
      end
      if #(opts.identity_files or {}) == 0 and not opts.passphrase then
        pgvault.raise("usage", "the backup is age-encrypted: give an identity file with -i FILE")
      end
      local ids = {}
      for _, file in ipairs(opts.identity_files or {}) do
        for _, id in ipairs(crypto.read_identities(file)) do ids[#ids + 1] = id end
      end
      out[#out + 1] = crypto.decryptor { identities = ids, passphrase = opts.passphrase }
    elseif layer == "zstd" then
      if not stream.unzstd then
        pgvault.raise("verify", "the backup is zstd-compressed and this build has no zstd decompressor (stream.unzstd)")
      end
      out[#out + 1] = stream.unzstd {}
    end
  end
  return out
end

return layers
