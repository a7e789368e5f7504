-- list the backups in a directory, newest first, with their manifest status
local cjson = require "cjson"
local catalog = require "lib.catalog"
local cli = require "lib.cli"
local naming = require "lib.naming"
local s3cli = require "lib.s3cli"

local o = cli.parse(arg, {
  usage = "pgvault list [--from DIR] [--json]",
  summary = "Lists the backups in DIR (default db_backups), newest first: time (UTC), environment,\n"
    .. "size, manifest status and path. Status 'ok' means the manifest is there and matches the\n"
    .. "file; 'missing' means the backup never completed; 'invalid' and 'size mismatch' mean\n"
    .. "the pair is damaged. Only 'ok' backups count as backups.",
  options = s3cli.with_options({
    { "from", "f", "DIR", "the directory or s3://BUCKET/PREFIX/ to list (default db_backups)" },
    { "json", nil, false, "one JSON array, for machines" },
  }),
})

local from = o.from or "db_backups"
local backups = s3cli.is_s3(from) and require("lib.s3backups").scan(from, s3cli.opts(o)) or catalog.scan(from)
if o.json then
  local rows = {}
  for _, b in ipairs(backups) do
    local m = b.manifest or {}
    rows[#rows + 1] = {
      path = b.path, name = b.name, time = naming.iso8601(b.time), environment = b.env, size = b.size,
      manifest = b.status, compressed = b.zst, encrypted = b.age, database = m.database,
      server_version = m.server_version, sha256 = type(m.stored) == "table" and m.stored.sha256 or nil,
    }
  end
  -- lua-cjson writes an empty table as {}; a listing is always an array
  print(#rows == 0 and "[]" or cjson.encode(rows))
  return
end
if #backups == 0 then
  print("no backups in " .. (o.from or "db_backups"))
  return
end
local rows = { { "TIME (UTC)", "ENV", "SIZE", "MANIFEST", "DATABASE", "FILE" } }
for _, b in ipairs(backups) do
  rows[#rows + 1] = { os.date("!%Y-%m-%d %H:%M:%S", b.time), b.env, cli.bytes(b.size), b.status,
    b.manifest and b.manifest.database or "-", b.path }
end
local widths = {}
for _, r in ipairs(rows) do
  for i, c in ipairs(r) do widths[i] = math.max(widths[i] or 0, #c) end
end
for _, r in ipairs(rows) do
  local cells = {}
  for i, c in ipairs(r) do cells[i] = i < #r and (c .. string.rep(" ", widths[i] - #c)) or c end
  print(table.concat(cells, "  "))
end
