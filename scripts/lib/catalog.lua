-- The backups in a directory, newest first, each with its manifest status:
--   ok              the manifest is there, readable, and matches the file's size
--   missing         no manifest: the backup never completed (or it was removed)
--   invalid         the manifest cannot be read as one
--   size mismatch   the file's size differs from what the manifest recorded
local fs = require "pgvault.fs"
local pgvault = require "pgvault"
local manifest = require "lib.manifest"
local naming = require "lib.naming"

local catalog = {}

-- "ok" or "size mismatch": the stored size the manifest records against the
-- archive's actual size. Shared with the bucket listing (lib.s3backups).
function catalog.size_status(m, size)
  local stored = m.stored and m.stored.bytes
  return (stored and stored ~= size) and "size mismatch" or "ok"
end

-- Sorts backups newest first (lib.naming's order).
function catalog.newest_first(list)
  table.sort(list, naming.newer)
  return list
end

-- The newest complete backup (status ok) in `list` (newest first) of
-- `database` (any when nil), and the names of the databases the complete
-- backups are of, for a message when there is none. An encrypted backup's
-- manifest keeps its database private (lib.trust): `identities` open it.
-- Whether backup `b` is complete and of `database` (any when nil); an
-- encrypted backup's sealed manifest is opened with `identities` first.
function catalog.fits(b, database, identities)
  if b.status ~= "ok" then return false end
  if not database then return true end
  if b.manifest.private and identities and #identities > 0 then
    pcall(require("lib.trust").open, b.manifest, identities)
  end
  return b.manifest.database == database
end

function catalog.latest(list, database, identities)
  local seen, names = {}, {}
  for _, b in ipairs(list) do
    if catalog.fits(b, database, identities) then return b, names end
    if b.status == "ok" then
      local db = b.manifest.database
      if db and not seen[db] then
        seen[db] = true
        names[#names + 1] = db
      end
    end
  end
  table.sort(names)
  return nil, names
end

function catalog.scan(dir)
  local st = fs.stat(dir)
  if not st then pgvault.raise("io", "cannot list " .. dir .. ": no such directory") end
  if st.type ~= "dir" then pgvault.raise("io", "cannot list " .. dir .. ": not a directory") end
  local out = {}
  for _, name in ipairs(fs.listdir(dir)) do
    local b = naming.parse(name)
    local path = dir .. "/" .. name
    local fst = b and fs.stat(path)
    if b and fst and fst.type == "file" then
      b.path, b.size = path, fst.size
      local ok, m, why = pcall(manifest.for_archive, path)
      if ok and m then
        b.manifest = m
        b.status = catalog.size_status(m, fst.size)
      else
        b.status = ok and "missing" or "invalid"
        b.problem = ok and why or tostring(m)
      end
      out[#out + 1] = b
    end
  end
  return catalog.newest_first(out)
end

return catalog
