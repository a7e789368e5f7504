-- check that a backup is whole: every byte of every table decoded and counted
local cli = require "lib.cli"
local layers = require "lib.layers"
local cjson = require "cjson"
local archive = require "pgvault.archive"
local fs = require "pgvault.fs"
local pgvault = require "pgvault"
local stream = require "pgvault.stream"
local s3cli = require "lib.s3cli"
local manifests = require "lib.manifest"
local naming = require "lib.naming"

local o = cli.parse(arg, {
  usage = "pgvault verify SRC [-i IDENTITY] [--list] [--json] [--restore-into URL] [S3 options]",
  summary = "Reads the whole backup SRC (a pg_dump custom-format archive, possibly zstd-compressed\n"
    .. "and age-encrypted: the layers are recognised by their magic bytes and peeled as the\n"
    .. "bytes stream) and checks every data block: each table's data decodes to its end and\n"
    .. "its COPY rows are counted. If SRC.manifest.json exists, the sizes, SHA-256 digests and\n"
    .. "per-table row counts must match it. Exits 0 only if the archive is whole.\n"
    .. "SRC may be s3://BUCKET/PREFIX/NAME (or …/latest: the newest backup with a manifest):\n"
    .. "the object streams from the bucket, with no temporary file, and is compared with\n"
    .. "NAME.manifest.json beside it.",
  options = s3cli.with_options({
    { "identity", "i", "FILE", "age identity file to decrypt with", multi = true },
    { "list", "l", false, "print the table of contents exactly as pg_restore --list does" },
    { "json", nil, false, "print the summary as JSON" },
    { "restore-into", nil, "URL", "restore into this scratch database, compare row counts, drop it" },
    { "threads", nil, "N", "threads inflating data blocks (default: the CPUs, at most 8); 1: one thread" },
    { "no-manifest", nil, false, "do not compare with SRC.manifest.json" },
  }),
  positionals = { { "SRC", "the backup file, or s3://BUCKET/PREFIX/NAME (…/latest: the newest complete one)" } },
})

local src = o.SRC
local threads = o.threads and math.tointeger(tonumber(o.threads))
if o.threads and (not threads or threads < 1) then pgvault.raise("usage", "--threads needs a positive number") end

-- An object in a bucket: the same checks, streamed (no temporary file).
-- `open` gives the source stage; `head` the first bytes for the layers.
local manifest_path, manifest, open, head, st
if s3cli.is_s3(src) then
  local b = require("lib.s3backups").open(src, s3cli.opts(o), { manifest = o.no_manifest and "skip" or "optional" })
  src, manifest_path, manifest, head, open = b.url, b.manifest_url, b.manifest, b.head, b.source
else
  st = fs.stat(src)
  if not st then pgvault.raise("io", "cannot open " .. src .. ": no such file") end
  if st.type == "dir" then pgvault.raise("io", "cannot verify " .. src .. ": it is a directory") end
  -- The manifest beside the archive, if any.
  manifest_path = naming.manifest_path(src)
  if not o.no_manifest then manifest = manifests.for_archive(src) end
  local f = assert(io.open(src, "rb"))
  head = f:read(64) or ""
  f:close()
  open = function() return stream.file_reader(src) end
end

local list = layers.detect(head, src)
if not list then
  pgvault.raise("verify", src .. " is not a pg_dump custom-format archive, nor zstd- or age-wrapped one " ..
    "(its first bytes match none of PGDMP, zstd or age)")
end

local summary, stored, plain
local function show_list(s)
  if o.list and s and s.list then io.stdout:write(s.list) end
end

local function failed(err, s)
  show_list(s)
  io.stdout:flush()
  if type(err) == "table" and type(err.message) == "string" and err.kind == "archive" then
    err.message = src .. ": " .. err.message .. " (the backup is damaged or incomplete: use another one)"
  elseif type(err) == "table" and type(err.message) == "string" and not err.message:find(src, 1, true) then
    err.message = src .. ": " .. err.message -- say which backup (a layer's or the bucket's error)
  end
  error(err, 0)
end

if #list == 1 and st and st.type == "file" and not manifest then
  -- a plain archive in a file: read it directly, data blocks in parallel
  local ok, res = pcall(archive.read, src, { list = o.list, threads = threads })
  if not ok then failed(res, type(res) == "table" and res.summary or nil) end
  summary = res
else
  local stages = { open(), stream.sha256 { label = "stored" } }
  -- three threads: reading and the stored digest; the layers; the plain digest and the parser
  if threads ~= 1 and #list > 1 then stages[#stages + 1] = stream.handoff() end
  for _, s in ipairs(layers.stages(list, { identity_files = o.identity })) do stages[#stages + 1] = s end
  if threads ~= 1 then stages[#stages + 1] = stream.handoff() end
  stages[#stages + 1] = stream.sha256 { label = "plain" }
  stages[#stages + 1] = archive.verifier { list = o.list }
  stages[#stages + 1] = stream.discard()
  local ok, res = pcall(stream.run, stages)
  if not ok then failed(res, type(res) == "table" and res.result and res.result.archive or nil) end
  summary, stored, plain = res.archive, res.stored, res.plain
end

-- Compare with the manifest: sizes, digests, per-table row counts.
local problems = {}
local function check(what, want, got)
  if want ~= nil and want ~= got then
    problems[#problems + 1] = string.format("%s: the manifest says %s, the backup has %s", what, tostring(want),
      tostring(got))
  end
end
if manifest then
  local ms, mp = manifest.stored or {}, manifest.plain or {}
  check("stored size", ms.bytes, stored.bytes)
  check("stored SHA-256", ms.sha256, stored.sha256)
  check("archive size", mp.bytes, plain.bytes)
  check("archive SHA-256", mp.sha256, plain.sha256)
  local rows = {}
  for _, tb in ipairs(summary.tables) do
    if tb.rows then rows[(tb.schema or "") .. "." .. tb.name] = tb.rows end
  end
  local want = manifests.row_counts(manifest) or {}
  local names = {}
  for key in pairs(want) do names[#names + 1] = key end
  table.sort(names)
  for _, key in ipairs(names) do check("rows of " .. key, want[key], rows[key]) end
end

-- The restore drill needs the pg and dump modules.
local drill
if o.restore_into then
  local has_pg = pcall(require, "pgvault.pg")
  local has_dump = pcall(require, "pgvault.dump")
  if not has_pg or not has_dump then
    pgvault.raise("verify", "--restore-into needs pgvault.pg and pgvault.dump, which this build lacks")
  end
  drill = require("lib.drill").run { src = src, source = open, layers = list, identity_files = o.identity,
    url = o.restore_into, summary = summary }
  for _, p in ipairs(drill.problems) do problems[#problems + 1] = p end
end

if o.json then
  local copy = {}
  for k, v in pairs(summary) do if k ~= "list" then copy[k] = v end end
  io.stdout:write(cjson.encode({ ok = #problems == 0, path = src, layers = list, archive = copy,
    stored = stored, plain = plain, manifest = manifest and manifest_path or nil,
    problems = #problems > 0 and problems or cjson.empty_array, restore = drill }), "\n")
elseif o.list then
  show_list(summary)
else
  local lo = summary.large_objects
  print(string.format("%s: archive %s (%s), %d TOC entries, %d tables, %d rows, %d large objects, %s of data",
    src, summary.version, summary.compression, summary.toc_entries, summary.totals.tables, summary.totals.rows,
    lo.count, cli.bytes(summary.totals.uncompressed)))
  for _, tb in ipairs(summary.tables) do
    print(string.format("  %-40s %12s rows %10s -> %10s", (tb.schema and (tb.schema .. ".") or "") ..
      tb.name:gsub("[\r\n]", " "), tb.rows and tostring(tb.rows) or "-", cli.bytes(tb.compressed),
      cli.bytes(tb.uncompressed)))
  end
  if manifest then print("  matches " .. manifest_path) end
  if drill then
    print(string.format("  restored into %s (dropped again): row counts of %d tables checked", drill.database,
      drill.tables))
  end
end
io.stdout:flush()
if #problems > 0 then
  pgvault.raise("verify", src .. ": " .. table.concat(problems, "; "))
end
