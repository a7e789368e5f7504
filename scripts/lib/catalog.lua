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

-- Whether backup `b` (a manifest read) is of `database` (any when nil); an
-- encrypted backup's sealed manifest is opened with `identities` first.
local function of_database(b, database, identities)
  if not database then return true end
  if b.manifest.private and identities and #identities > 0 then
    pcall(require("lib.trust").open, b.manifest, identities)
  end
  return b.manifest.database == database
end

-- Whether backup `b` is complete and of `database` (any when nil).
function catalog.fits(b, database, identities)
  return b.status == "ok" and of_database(b, database, identities)
end

-- What "latest" takes (lib.source, for a directory and a bucket alike):
-- choose(b) says whether backup b, of any status, newest first, is the one:
-- it fits (catalog.fits) and, with `accept` (lib.trust.accepts: b -> its
-- signed manifest, or nil and why), a trusted key signed it; the signed
-- manifest then replaces the one read before, and decides the database.
-- A backup of the database passed over (refused by `accept`, or its size
-- not its manifest's) gets one warning line; skipped() counts them.
function catalog.chooser(database, identities, accept)
  local skipped = 0
  local function pass_over(fmt, ...)
    skipped = skipped + 1
    log.warn("passing over a backup for latest: " .. fmt, ...)
  end
  local function choose(b)
    if b.status == "size mismatch" and of_database(b, database, identities) then
      pass_over("%s has %d bytes, but its manifest records %s: it was damaged or replaced", b.path, b.size,
        tostring(b.manifest.stored.bytes))
      return false
    end
    if not catalog.fits(b, database, identities) then return false end
    if not accept then return true end
    local m, why = accept(b)
    if not m then
      pass_over("%s", why)
      return false
    end
    b.manifest = m
    return of_database(b, database, identities)
  end
  return choose, function() return skipped end
end

-- The names of the databases the complete backups in `list` are of, sorted,
-- and how many keep theirs sealed (encrypted, not opened).
function catalog.databases(list)
  local seen, names, sealed = {}, {}, 0
  for _, b in ipairs(list) do
    local db = b.status == "ok" and b.manifest.database
    if db and not seen[db] then
      seen[db] = true
      names[#names + 1] = db
    elseif b.status == "ok" and not db and b.manifest.private then
      sealed = sealed + 1
    end
  end
  table.sort(names)
  return names, sealed
end

-- The newest backup in `list` (newest first) that catalog.chooser(database,
-- identities, accept) takes, or nil and the databases the complete backups
-- are of (for a message); and how many newer ones were passed over.
function catalog.latest(list, database, identities, accept)
  local choose, skipped = catalog.chooser(database, identities, accept)
  for _, b in ipairs(list) do
    if choose(b) then return b, {}, skipped() end
  end
  return nil, catalog.databases(list), skipped()
end

function catalog.scan(dir)
  local st = fs.stat(dir)
  if not st or st.type ~= "dir" then
    pgvault.raise("io", string.format("cannot list %s: %s: name the directory (or s3://BUCKET/PREFIX/) that "
      .. "'backup --to' wrote to (default db_backups)", dir, st and "not a directory" or "no such directory"))
  end
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
