-- Backup manifests: the one place that reads, checks and writes them.
-- <archive>.manifest.json (the suffix is lib.naming's) is written after the
-- archive is complete: it is the commit marker. Every reader (list, restore,
-- verify, download, prune, …) goes through manifest.decode, so every one
-- refuses the same things: text that is not JSON, a format newer than this
-- pgvault's, a known field of the wrong type (manifest.FIELDS). Unknown
-- fields are kept as they are, so later versions can add more.
--   manifest.new(fields) -> m            with format, tool and created_at
--   manifest.encode(m) -> text           readable JSON, keys in a stable order
--   manifest.decode(text, where) -> m    raises kind "verify" naming `where`
--   manifest.read(path) -> m, text       decode of a file (kind "io" if unreadable)
--   manifest.for_archive(path) -> m, text | nil, why   nil only when there is none
--   manifest.write(archive, m, {no_clobber=true}) -> path of the manifest
--   manifest.row_counts(m) -> {["schema.table"] = rows} | nil
local fs = require "pgvault.fs"
local pgvault = require "pgvault"
local json = require "lib.json"
local naming = require "lib.naming"

local manifest = {}

manifest.FORMAT = 1
-- A manifest is small (a line per table); a bigger one is not ours.
manifest.MAX_BYTES = 64 << 20

-- The known fields and their types: "string", "integer", "size" (an
-- integer >= 0), "sha256" (64 lower-case hex digits), "boolean", "table",
-- a table of fields (an object), or { type } (an array of that type).
manifest.FIELDS = {
  format = "integer", tool = "string", created_at = "string", environment = "string", database = "string",
  server_version = "string", server_version_num = "integer", pg_dump_version = "string",
  compression = { method = "string", level = "integer", frame_size = "size" },
  stored = { name = "string", bytes = "size", sha256 = "sha256", block_size = "size", blocks = { "sha256" } },
  plain = { bytes = "size", sha256 = "sha256" },
  encryption = { method = "string", recipients = { "string" } },
  -- the database's own properties (lib.database.properties), so that a
  -- restore into a database that does not exist yet creates it like this one
  properties = { owner = "string", encoding = "string", collate = "string", ctype = "string",
    locale_provider = "string", locale = "string", icu_rules = "string", tablespace = "string",
    connection_limit = "integer", is_template = "boolean", allow_connections = "boolean", comment = "string",
    acl = { { grantee = "string", privilege = "string", grantable = "boolean" } },
    settings = { { role = "string", setting = "string" } },
    security_labels = { { provider = "string", label = "string" } } },

  archive = "table",
  tables = { { schema = "string", name = "string", rows = "size" } },
  private = "string", -- lib.trust: an encrypted backup's schema-revealing fields, age-encrypted
}

-- The order keys are written in; others follow alphabetically.
local ORDER = { "format", "tool", "created_at", "environment", "database", "server_version",
  "server_version_num", "pg_dump_version", "compression", "stored", "plain", "encryption", "properties",
  "archive", "tables", "private" }

local function type_name(v)
  if math.type(v) then return math.type(v) == "integer" and "an integer" or "a number" end
  if type(v) == "table" then return "an object or array" end
  if v == json.null then return "null" end
  return "a " .. type(v)
end

local SCALARS = {
  string = { "a string", function(v) return type(v) == "string" end },
  integer = { "an integer", function(v) return math.type(v) == "integer" end },
  size = { "a whole number >= 0", function(v) return math.type(v) == "integer" and v >= 0 end },
  sha256 = { "64 lower-case hex digits", function(v) return type(v) == "string" and #v == 64 and
    v:match("^[0-9a-f]+$") ~= nil end },
  boolean = { "true or false", function(v) return type(v) == "boolean" end },
  table = { "an object", function(v) return type(v) == "table" end },
}

-- Returns nil when `v` fits `spec`, else the first problem.
local function check(v, spec, path)
  if type(spec) == "string" then
    local want, ok = SCALARS[spec][1], SCALARS[spec][2]
    if not ok(v) then return string.format("%s must be %s, not %s", path, want, type_name(v)) end
    return nil
  end
  if type(v) ~= "table" then
    return string.format("%s must be %s, not %s", path, spec[1] and "an array" or "an object", type_name(v))
  end
  if spec[1] then
    local n = 0
    for _ in pairs(v) do n = n + 1 end
    if n ~= #v then return path .. " must be an array" end
    for i, x in ipairs(v) do
      local why = check(x, spec[1], string.format("%s[%d]", path, i))
      if why then return why end
    end
    return nil
  end
  if #v > 0 then return path .. " must be an object, not an array" end
  for k, sub in pairs(spec) do
    if v[k] ~= nil then
      local why = check(v[k], sub, path .. "." .. k)
      if why then return why end
    end
  end
  return nil
end

local function invalid(where, why)
  pgvault.raise("verify", string.format("%s is not a usable pgvault manifest: %s", where, why), { path = where })
end

-- The manifest in `text`, checked; `where` names it in errors.
-- Where `v` holds a number no JSON can write (1e400 reads as infinity),
-- in a field this pgvault does not know as well: nothing could write such
-- a manifest again. nil when there is none.
local function non_finite(v, path)
  for k, x in pairs(v) do
    local at = path == "" and tostring(k) or (path .. "." .. tostring(k))
    if type(x) == "table" then
      local why = non_finite(x, at)
      if why then return why end
    elseif type(x) == "number" and (x ~= x or x == math.huge or x == -math.huge) then
      return at .. " is a number out of range"
    end
  end
  return nil
end

function manifest.decode(text, where)
  where = where or "the manifest"
  if type(text) ~= "string" then invalid(where, "no text") end
  if #text > manifest.MAX_BYTES then invalid(where, string.format("larger than %d bytes", manifest.MAX_BYTES)) end
  local ok, m = pcall(json.decode, text)
  if not ok then invalid(where, "not valid JSON") end
  if type(m) ~= "table" or (#m > 0) then invalid(where, "not a JSON object") end
  if m.format == nil then invalid(where, "it has no format field") end
  local why = check(m.format, "integer", "format")
  if why then invalid(where, why) end
  if m.format > manifest.FORMAT or m.format < 1 then
    pgvault.raise("verify", string.format("%s has format %d; this pgvault reads formats 1 to %d: upgrade pgvault",
      where, m.format, manifest.FORMAT), { path = where })
  end
  for k, spec in pairs(manifest.FIELDS) do
    if m[k] ~= nil then
      why = check(m[k], spec, k)
      if why then invalid(where, why) end
    end
  end
  why = non_finite(m, "")
  if why then invalid(where, why) end
  return m
end

function manifest.encode(m)
  return json.encode(m, { pretty = true, order = ORDER }) .. "\n"
end

-- A new manifest with the fields every backup has.
function manifest.new(fields)
  local m = { format = manifest.FORMAT, tool = "pgvault " .. pgvault.version, created_at = naming.iso8601() }
  for k, v in pairs(fields or {}) do m[k] = v end
  return m
end

-- Writes <archive_path>.manifest.json; returns its path. With no_clobber
-- (the default) an existing manifest is never replaced (kind "exists").
function manifest.write(archive_path, m, opts)
  local path = naming.manifest_path(archive_path)
  local no_clobber = not (opts and opts.no_clobber == false)
  fs.write_file(path, manifest.encode(m), { mode = 384, no_clobber = no_clobber })
  return path
end

-- Reads and checks the manifest at `path`; returns it and its exact text
-- (what a signature covers).
function manifest.read(path)
  local st = fs.stat(path)
  if st and st.type == "file" and st.size > manifest.MAX_BYTES then
    invalid(path, string.format("larger than %d bytes", manifest.MAX_BYTES))
  end
  local text = fs.read_file(path)
  return manifest.decode(text, path), text
end

-- The manifest next to an archive and its text; nil and why when there is
-- none. One that is there but unusable raises.
function manifest.for_archive(archive_path)
  local path = naming.manifest_path(archive_path)
  if not fs.exists(path) then return nil, "no manifest " .. path end
  return manifest.read(path)
end

-- Per-table row counts recorded in a manifest, as {["schema.table"] = rows},
-- or nil when it records none.
function manifest.row_counts(m)
  if type(m) ~= "table" or type(m.tables) ~= "table" or #m.tables == 0 then return nil end
  local counts = {}
  for _, t in ipairs(m.tables) do
    if t.schema and t.name and t.rows then counts[t.schema .. "." .. t.name] = t.rows end
  end
  return next(counts) and counts or nil
end

return manifest
