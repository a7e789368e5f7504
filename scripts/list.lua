-- list the backups in a directory, newest first, with their manifest status
local catalog = require "lib.catalog"
local cli = require "lib.cli"
local json = require "lib.json"
local naming = require "lib.naming"
local s3cli = require "lib.s3cli"
local trust = require "lib.trust"

local spec = require("lib.config").cli(cli.with_options({
  usage = "pgvault list [--from DIR] [--database NAME] [--json] [-i FILE]... [--trust KEY.pub]...",
  summary = "Lists the backups in DIR (default db_backups), newest first: time (UTC), environment,\n"
    .. "size, manifest status, database and path. Status 'ok' means the manifest is there and\n"
    .. "matches the file; 'missing' means the backup never completed; 'invalid' (the manifest is\n"
    .. "not one this pgvault reads) and 'size mismatch' mean the pair is damaged. Only 'ok'\n"
    .. "backups count as backups.",
  options = s3cli.with_options({
    { "from", "f", "DIR", "the directory or s3://BUCKET/PREFIX/ to list (default db_backups)" },
    { "database", nil, "NAME", "only the backups of database NAME (as their manifests say)" },
    { "json", nil, false, "one JSON array, for machines" },
    { "identity", "i", "FILE", "age identity file: show whether it opens each encrypted backup (KEY column; "
      .. "only the header is read)", multi = true },
  }),
}, trust.TRUST_OPTIONS))
-- With --env NAME the environment's destination (its key "to" feeds --from)
-- and S3 settings fill in what the flags leave out.
local o = require("lib.config").apply(cli.parse(arg, spec), spec, { from = "to" })

local s3opts = s3cli.opts(o) -- checked whether a bucket is listed or not

-- With -i: "yes" when an identity unwraps the file key and the header MAC
-- matches, "no" when none does, "damaged" when the header is bad,
-- "unreadable" when a bucket would not give its first bytes, "-" when the
-- backup is not encrypted.
local key_status = function() return nil end
if #o.identity > 0 then
  local crypto = require "pgvault.crypto"
  local identities = require("lib.layers").read_identities(o.identity)
  local client -- in a bucket, the header comes from a ranged GET of the object's first bytes
  key_status = function(b)
    if not b.age then return "-" end
    local opts = { identities = identities }
    if b.key then
      client = client or require("pgvault.s3").client(s3opts)
      local ok, head = pcall(client.get, client, b.path, { range = "bytes=0-262143" })
      if not ok then
        log.warn("cannot read the header of %s: %s", b.path, tostring(head))
        return "unreadable"
      end
      opts.data = head
    end
    local ok, err = pcall(crypto.check_header, b.path, opts)
    if ok then return "yes" end
    return type(err) == "table" and err.failure == "no match" and "no" or "damaged"
  end
end

local from = o.from or "db_backups"
local all = s3cli.is_s3(from) and require("lib.s3backups").scan(from, s3opts) or catalog.scan(from)

-- --trust KEY.pub (or PGVAULT_TRUST): a SIG column, good (signed by a
-- trusted key, naming its object, every digest recorded), bad or none (not
-- signed). With -i, encrypted backups' manifests show their database.
o.s3 = s3cli.is_s3(from) and s3opts or nil
local signed = trust.annotate(all, o)
local backups = {}
for _, b in ipairs(all) do
  if not o.database or (b.manifest and b.manifest.database == o.database) then backups[#backups + 1] = b end
end

if o.json then
  local rows = json.array()
  for _, b in ipairs(backups) do
    local m = b.manifest or {}
    rows[#rows + 1] = {
      path = b.path, name = b.name, time = naming.iso8601(b.time), environment = b.env, size = b.size,
      manifest = b.status, problem = b.problem, compressed = b.zst, encrypted = b.age, database = m.database,
      server_version = m.server_version, sha256 = m.stored and m.stored.sha256 or nil, key = key_status(b),
      sig = b.sig,
    }
  end
  print(json.encode(rows))
  return
end
if #backups == 0 then
  print("no backups" .. (o.database and (" of database " .. o.database) or "") .. " in " .. from)
  return
end
local rows = { { "TIME (UTC)", "ENV", "SIZE", "MANIFEST", "DATABASE", "FILE" } }
if #o.identity > 0 then table.insert(rows[1], 6, "KEY") end
if signed then table.insert(rows[1], 5, "SIG") end
-- a name from a manifest is shown, not obeyed: no control characters
local function shown(s) return (s:gsub("%c", "?")) end
for _, b in ipairs(backups) do
  rows[#rows + 1] = { os.date("!%Y-%m-%d %H:%M:%S", b.time), b.env, cli.bytes(b.size), b.status,
    shown(b.manifest and b.manifest.database or "-"), shown(b.path) }
  if #o.identity > 0 then table.insert(rows[#rows], 6, key_status(b)) end
  if signed then table.insert(rows[#rows], 5, b.sig) end
end
local widths = {}
for _, r in ipairs(rows) do
  for i, c in ipairs(r) do widths[i] = math.max(widths[i] or 0, utf8.len(c) or #c) end
end
for _, r in ipairs(rows) do
  local cells = {}
  for i, c in ipairs(r) do cells[i] = i < #r and (c .. string.rep(" ", widths[i] - (utf8.len(c) or #c))) or c end
  print(table.concat(cells, "  "))
end
