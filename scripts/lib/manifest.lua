-- Backup manifests: <archive>.manifest.json, written after the archive is
-- complete (the commit marker). Known fields (all optional but format):
--   format, tool, created_at, environment, database, server_version,
--   server_version_num, pg_dump_version, compression {method, level},
--   stored {name, bytes, sha256}   the file as stored
--   plain {bytes, sha256}          the pg_dump archive pg_restore reads
--   encryption {...}               recipients' fingerprints, never secrets
--   archive {...}                  the archive verifier's summary
--   tables [{schema, name, rows}]  per-table row counts, when known
-- Unknown fields are kept as they are, so later versions can add more.
local cjson = require "cjson"
local fs = require "pgvault.fs"
local pgvault = require "pgvault"
local naming = require "lib.naming"

local manifest = {}

manifest.FORMAT = 1

-- The order keys are written in; others follow alphabetically.
local ORDER = { "format", "tool", "created_at", "environment", "database", "server_version",
  "server_version_num", "pg_dump_version", "compression", "stored", "plain", "encryption",
  "archive", "tables" }
local RANK = {}
for i, k in ipairs(ORDER) do RANK[k] = i end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ra, rb = RANK[a] or 1000, RANK[b] or 1000
    if ra ~= rb then return ra < rb end
    return tostring(a) < tostring(b)
  end)
  return keys
end

-- Marks a table to be written as a JSON array even when empty.
local ARRAY = {}
function manifest.array(t) return setmetatable(t or {}, ARRAY) end

local function is_array(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t and (n > 0 or getmetatable(t) == ARRAY)
end

-- Readable JSON: two-space indentation, keys in a stable order.
local function encode(v, indent)
  if type(v) ~= "table" then return cjson.encode(v) end
  if next(v) == nil then return is_array(v) and "[]" or "{}" end
  local inner = indent .. "  "
  local parts = {}
  if is_array(v) then
    for i = 1, #v do parts[i] = inner .. encode(v[i], inner) end
    return "[\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "]"
  end
  for _, k in ipairs(sorted_keys(v)) do
    parts[#parts + 1] = inner .. cjson.encode(tostring(k)) .. ": " .. encode(v[k], inner)
  end
  return "{\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "}"
end

function manifest.encode(m)
  return encode(m, "") .. "\n"
end

-- A new manifest with the fields every backup has.
function manifest.new(fields)
  local m = { format = manifest.FORMAT, tool = "pgvault " .. pgvault.version, created_at = naming.iso8601() }
  for k, v in pairs(fields or {}) do m[k] = v end
  return m
end

-- Writes <archive_path>.manifest.json atomically; returns its path.
function manifest.write(archive_path, m)
  local path = naming.manifest_path(archive_path)
  fs.write_file(path, manifest.encode(m), { mode = 384 })
  return path
end

-- Reads and checks a manifest; returns it, or nil and why.
function manifest.read(path)
  local ok, text = pcall(fs.read_file, path)
  if not ok then return nil, "cannot read " .. path .. ": " .. tostring(text) end
  local dok, m = pcall(cjson.decode, text)
  if not dok or type(m) ~= "table" then return nil, path .. " is not valid JSON" end
  if math.type(m.format) ~= "integer" and type(m.format) ~= "number" then
    return nil, path .. " is not a pgvault manifest (no format)"
  end
  if m.format > manifest.FORMAT then
    return nil, string.format("%s has format %d; this pgvault reads up to %d: upgrade pgvault",
      path, m.format, manifest.FORMAT)
  end
  return m
end

-- The manifest next to an archive, or nil and why.
function manifest.for_archive(archive_path)
  local path = naming.manifest_path(archive_path)
  if not fs.exists(path) then return nil, "no manifest " .. path end
  return manifest.read(path)
end

-- Per-table row counts recorded in a manifest, as {["schema.table"] = rows},
-- or nil when it records none. `tables` may be filled from the archive
-- verifier's summary (COPY row counts) by the backup workflow.
function manifest.row_counts(m)
  if type(m) ~= "table" or type(m.tables) ~= "table" or #m.tables == 0 then return nil end
  local counts = {}
  for _, t in ipairs(m.tables) do
    if type(t) == "table" and t.schema and t.name and tonumber(t.rows) then
      counts[t.schema .. "." .. t.name] = math.tointeger(tonumber(t.rows)) or tonumber(t.rows)
    end
  end
  return next(counts) and counts or nil
end

return manifest
