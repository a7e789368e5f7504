-- Layers of a stored backup, from the outside in, and the one vocabulary
-- for them: "age" (encryption: "age-encryption.org/v1" or the ASCII armor
-- line), "zstd" (28 B5 2F FD), "pgdmp" (the pg_dump custom-format archive).
-- They are recognised by their first bytes and peeled as the bytes stream.
-- What lies under an age layer cannot be seen before decrypting: the
-- manifest says (compression.method), else the name (….zst.age).
local pgvault = require "pgvault"
local stream = require "pgvault.stream"

local layers = {}

-- Enough of the first bytes for layers.sniff.
layers.HEAD_BYTES = 64

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

-- The layers from the outside in, e.g. {"age", "zstd", "pgdmp"}, or nil
-- when the first bytes are none of ours. `name` and the manifest `m` (both
-- optional) say what is under an age layer.
function layers.detect(head, name, m)
  local outer = layers.sniff(head or "")
  if outer == "pgdmp" then return { "pgdmp" } end
  if outer == "zstd" then return { "zstd", "pgdmp" } end
  if outer == "age" then
    local inner
    if type(m) == "table" and type(m.compression) == "table" and m.compression.method then
      inner = m.compression.method == "zstd"
    else
      inner = ((name or ""):gsub("%.age$", "")):match("%.zst$") ~= nil
    end
    return inner and { "age", "zstd", "pgdmp" } or { "age", "pgdmp" }
  end
  return nil
end

-- layers.detect, raising kind "verify" for something that is not a backup.
function layers.require(head, name, m)
  local list = layers.detect(head, name, m)
  if not list then
    pgvault.raise("verify", string.format("%s is not a backup: its first bytes are none of a pg_dump "
      .. "custom-format archive (PGDMP), zstd or age", name or "the input"))
  end
  return list
end

-- Whether the list has layer `name`.
function layers.has(list, name)
  for _, l in ipairs(list) do if l == name then return true end end
  return false
end

-- The identities from age identity files, in order.
function layers.read_identities(files)
  local crypto = require "pgvault.crypto"
  local ids = {}
  for _, file in ipairs(files or {}) do
    if not require("pgvault.fs").exists(file) then
      pgvault.raise("usage", string.format("-i/--identity: no file %s (an age identity file, as 'pgvault keygen -o "
        .. "FILE' writes one)", file))
    end
    for _, id in ipairs(crypto.read_identities(file)) do ids[#ids + 1] = id end
  end
  return ids
end

-- Filter stages that peel `list` (from layers.detect) down to the archive,
-- in pipeline order. opts: identities (read already), identity_files,
-- passphrase, name (of the backup, for messages), threads (zstd frames
-- decoded on that many threads; 1: in this thread; nil: the CPUs, at most
-- 4). The zstd stage's report is the run's `unzstd`: threads, frames,
-- frames_in_parallel.
function layers.stages(list, opts)
  opts = opts or {}
  local out = {}
  for _, layer in ipairs(list) do
    if layer == "age" then
      local ids = opts.identities or layers.read_identities(opts.identity_files)
      if #ids == 0 and not opts.passphrase then
        pgvault.raise("usage", string.format("%s is encrypted (age): give the identity file that opens it with -i FILE",
          opts.name or "the backup"))
      end
      out[#out + 1] = require("pgvault.crypto").decryptor { identities = ids, passphrase = opts.passphrase }
    elseif layer == "zstd" then
      out[#out + 1] = stream.unzstd { threads = opts.threads, label = "unzstd" }
    end
  end
  return out
end

return layers
