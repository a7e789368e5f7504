-- The steps of verify, which scripts/verify.lua calls in order (copy that
-- file to change the procedure: README "Customising a workflow"):
--   local job = verify.plan(o)
--   local src <close> = verify.open(job)        the backup (read once), its manifest, its layers
--   local r = verify.read_file(job, src) or verify.read(job, src, { src:reader(), verify.digest("stored"),
--     verify.unwrap(job, src), verify.digest("plain"), verify.archive(job), verify.discard() })
--   verify.compare(job, src, r)                 sizes, digests, row counts against the manifest
--   verify.drill(job, src, r)                   --restore-into URL
--   verify.report(job, src, r)                  the summary; raises when anything did not match
local archive = require "pgvault.archive"
local pgvault = require "pgvault"
local stream = require "pgvault.stream"
local cli = require "lib.cli"
local json = require "lib.json"
local layers = require "lib.layers"
local manifests = require "lib.manifest"
local pipeline = require "lib.pipeline"
local s3cli = require "lib.s3cli"
local source = require "lib.source"

local verify = {}

-- The command line of scripts/verify.lua (lib.cli's spec).
verify.CLI = {
  usage = "pgvault verify SRC [-i IDENTITY] [--list] [--json] [--restore-into URL] [S3 options]",
  summary = "Reads the whole backup SRC (a pg_dump custom-format archive, possibly zstd-compressed\n"
    .. "and age-encrypted: the layers are recognised by their magic bytes and peeled as the\n"
    .. "bytes stream) and checks every data block: each table's data decodes to its end and\n"
    .. "its rows are counted (COPY lines, or the rows of --inserts archives' INSERTs). If\n"
    .. "SRC.manifest.json exists, the sizes, SHA-256 digests and per-table row counts must\n"
    .. "match it. Exits 0 only if the archive is whole and matches. SRC may be a pipe or '-'\n"
    .. "(read once), DIR/latest, or s3://BUCKET/PREFIX/NAME (…/latest: the newest complete\n"
    .. "backup; --database NAME: of that database; with --trust, the newest one a trusted key\n"
    .. "signed): the object streams from the bucket, with no temporary file, and is compared\n"
    .. "with NAME.manifest.json beside it.",
  options = s3cli.with_options {
    { "identity", "i", "FILE", "age identity file to decrypt with", multi = true },
    { "list", "l", false, "print the table of contents exactly as pg_restore --list does" },
    { "json", nil, false, "print the summary as JSON" },
    { "restore-into", nil, "URL", "restore into this scratch database, compare row counts, drop it" },
    { "threads", nil, "N", "threads decoding zstd frames (default: the CPUs, at most 4) and inflating a plain "
      .. "archive file's data blocks (at most 8); 1: one thread for everything" },
    { "no-manifest", nil, false, "do not compare with SRC.manifest.json" },
    { "database", nil, "NAME", "with …/latest: the newest backup of database NAME" },
  },
  positionals = { { "SRC", "the backup file, '-', DIR/latest, or s3://BUCKET/PREFIX/NAME (…/latest: the newest "
    .. "complete one; with --trust, the newest one a trusted key signed)" } },
}

-- Step 1: the options checked.
function verify.plan(o)
  local job = {}
  for k, v in pairs(o) do job[k] = v end
  job.src = o.src or o.SRC
  if o.threads ~= nil then
    job.threads = math.tointeger(tonumber(o.threads))
    if not job.threads or job.threads < 1 or job.threads > 64 then
      pgvault.raise("usage", "--threads needs a whole number 1..64, not '" .. tostring(o.threads) .. "'")
    end
  end
  job.s3 = o.s3 or s3cli.opts(o)
  job.identity = o.identity or {}
  job.problems = json.array()
  return job
end

-- Step 2: the backup, read once (a pipe is copied as it is read), and its
-- manifest unless --no-manifest. The identities (-i) are read here: …/latest
-- opens encrypted backups' sealed manifests with them to find the database.
function verify.open(job)
  job.identities = job.identities or layers.read_identities(job.identity)
  return source.open(job.src, { s3 = job.s3, database = job.database, trust = job.trust, identities = job.identities,
    manifest = job.no_manifest and "skip" or "optional", once = not job.restore_into })
end

-- The stages verify.read takes.
function verify.digest(label)
  return stream.sha256 { label = label }
end

-- A thread boundary (stream.handoff): the stages before it and after it
-- run on different cores, handing buffers over in bounded memory. Left out
-- with --threads 1, or when `wanted` is false.
function verify.thread(job, wanted)
  return job.threads ~= 1 and wanted ~= false and stream.handoff()
end

-- Whether the backup's zstd frames are decoded by stream.unzstd's own
-- threads: its manifest says they are independent frames of at most 4 MiB
-- (what backup writes on up to two cores; bigger ones may be decoded in
-- sequence). Older backups say nothing: one frame, decoded in sequence.
function verify.decoded_apart(job, src)
  local c = src.manifest and src.manifest.compression
  return job.threads ~= 1 and src.layers[1] == "zstd" and type(c) == "table" and type(c.frame_size) == "number"
    and c.frame_size > 0 and c.frame_size <= 4 << 20
end

-- Whether the layers (age, zstd) want a thread boundary before them: age
-- decryption does, and zstd decoded in sequence; zstd frames decoded apart
-- do not (stream.unzstd's threads decode them, the caller's one of them,
-- and a hand-off before it would only copy every byte once more and add a
-- thread contending for the cores).
function verify.layers_apart(job, src)
  return #src.layers > 1 and not (#src.layers == 2 and verify.decoded_apart(job, src))
end

function verify.unwrap(job, src)
  return layers.stages(src.layers, { identity_files = job.identity, name = src.name, threads = job.threads })
end

function verify.archive(job)
  return archive.verifier { label = "archive", list = job.list }
end

function verify.discard()
  return stream.discard()
end

-- Says which backup an error is about, and that it is damaged.
local function failed(job, src, err, summary)
  if job.list and summary and summary.list then io.stdout:write(summary.list) end
  io.stdout:flush()
  if type(err) == "table" and type(err.message) == "string" and err.kind == "archive" then
    err.message = src.name .. ": " .. err.message .. " (the backup is damaged or incomplete: use another one)"
  elseif type(err) == "table" and type(err.message) == "string" and not err.message:find(src.name, 1, true) then
    err.message = src.name .. ": " .. err.message
  end
  error(err, 0)
end

-- Step 3, the fast way: a plain archive in a file, with no manifest to
-- compare digests with, is read directly, data blocks in parallel. nil
-- for anything else.
function verify.read_file(job, src)
  if #src.layers ~= 1 or not src.file or src.manifest then return nil end
  local ok, res = pcall(archive.read, src.file, { list = job.list, threads = job.threads })
  if not ok then failed(job, src, res, type(res) == "table" and res.summary or nil) end
  return { archive = res }
end

-- Step 3: every byte through the stages (nested lists flattened, false
-- left out); returns what each saw (r.archive, r.stored, r.plain).
function verify.read(job, src, list)
  local ok, res = pcall(stream.run, pipeline.flatten(list))
  if not ok then failed(job, src, res, type(res) == "table" and res.result and res.result.archive or nil) end
  return res
end

-- Step 4: sizes, digests and per-table row counts against the manifest;
-- each difference becomes a problem (job.problems).
function verify.compare(job, src, r)
  local m = src.manifest
  if not m then return end
  local before = #job.problems
  local function check(what, want, got)
    if want ~= nil and want ~= got then
      job.problems[#job.problems + 1] = string.format("%s: the manifest says %s, the backup has %s", what,
        tostring(want), tostring(got))
    end
  end
  local ms, mp, stored, plain = m.stored or {}, m.plain or {}, r.stored or {}, r.plain or {}
  check("stored size", ms.bytes, stored.bytes)
  check("stored SHA-256", ms.sha256, stored.sha256)
  check("archive size", mp.bytes, plain.bytes)
  check("archive SHA-256", mp.sha256, plain.sha256)
  local rows = {}
  for _, tb in ipairs(r.archive.tables) do
    if tb.rows then rows[(tb.schema or "") .. "." .. tb.name] = tb.rows end
  end
  local want = manifests.row_counts(m) or {}
  local names = {}
  for key in pairs(want) do names[#names + 1] = key end
  table.sort(names)
  for _, key in ipairs(names) do check("rows of " .. key, want[key], rows[key]) end
  job.matches = #job.problems == before
end

-- Step 5: --restore-into URL: restores into that scratch database, compares
-- each table's rows with the archive's, and drops it again. The backup is
-- read a second time: with --trust each block is checked again before it
-- goes on, so one replaced since step 3 never reaches pg_restore.
function verify.drill(job, src, r)
  if not job.restore_into then return end
  local d = require("lib.drill").run { src = src.name, source = function() return src:reader() end,
    verifier = require("lib.trust").verifier(src), layers = src.layers, identity_files = job.identity,
    url = job.restore_into, summary = r.archive, threads = job.threads }
  for _, p in ipairs(d.problems) do job.problems[#job.problems + 1] = p end
  job.drill = d
end

local function print_summary(job, src, r)
  local s = r.archive
  print(string.format("%s: archive %s (%s), %d TOC entries, %d tables, %d rows, %d large objects, %s of data",
    src.name, s.version, s.compression, s.toc_entries, s.totals.tables, s.totals.rows, s.large_objects.count,
    cli.bytes(s.totals.uncompressed)))
  for _, tb in ipairs(s.tables) do
    print(string.format("  %-40s %12s rows %10s -> %10s", (tb.schema and (tb.schema .. ".") or "") ..
      tb.name:gsub("[\r\n]", " "), tb.rows and tostring(tb.rows) or "-", cli.bytes(tb.compressed),
      cli.bytes(tb.uncompressed)))
  end
  if job.matches then print("  matches " .. src.manifest_path) end
  if job.drill then
    print(string.format("  restored into %s (dropped again): row counts of %d tables checked", job.drill.database,
      job.drill.tables))
  end
end

-- Step 6: the summary (--json, --list or the table); raises kind "verify"
-- when anything did not match.
function verify.report(job, src, r)
  if job.json then
    local copy = {}
    for k, v in pairs(r.archive) do if k ~= "list" then copy[k] = v end end
    copy.tables = json.array(copy.tables)
    local out = { ok = #job.problems == 0, path = src.name, layers = json.array(src.layers), archive = copy,
      stored = r.stored, plain = r.plain, unzstd = r.unzstd, problems = job.problems, restore = job.drill }
    if src.manifest then out.manifest, out.matches = src.manifest_path, job.matches end
    io.stdout:write(json.encode(out), "\n")
  elseif job.list then
    io.stdout:write(r.archive.list or "")
  else
    print_summary(job, src, r)
  end
  io.stdout:flush()
  if #job.problems > 0 then
    pgvault.raise("verify", src.name .. ": " .. table.concat(job.problems, "; "))
  end
end

-- For Lua callers (nightly's read-back check): the same steps, printing
-- nothing. opts: src, identity (files), s3, no_manifest, database,
-- restore_into, threads. Returns {archive=, stored=, plain=, unzstd=, manifest=,
-- manifest_path=, problems=, matches=, drill=}; raises kind "verify" when
-- anything did not match (the error's `result` is that table).
function verify.run(opts)
  local job = verify.plan(opts)
  local src <close> = verify.open(job)
  local trust = require "lib.trust"
  trust.authenticate(job, src)
  local r = verify.read_file(job, src) or verify.read(job, src, { src:reader(), trust.verifier(src),
    verify.digest("stored"), verify.unwrap(job, src), verify.digest("plain"), verify.archive(job), verify.discard() })
  verify.compare(job, src, r)
  verify.drill(job, src, r)
  local out = { archive = r.archive, stored = r.stored, plain = r.plain, unzstd = r.unzstd, manifest = src.manifest,
    manifest_path = src.manifest and src.manifest_path, problems = job.problems, matches = job.matches,
    drill = job.drill }
  if #job.problems > 0 then
    error(pgvault.error("verify", src.name .. ": " .. table.concat(job.problems, "; "), { result = out }), 0)
  end
  return out
end

return verify
