-- The steps of a backup, which scripts/backup.lua calls in order (copy that
-- file to change the procedure: README "Customising a workflow"):
--   local job = backup.plan(o)                 options checked, the database asked who it is, pg_dump found
--   local dest <close> = backup.destination(job)   a directory or s3://…; removes an unfinished backup
--   local r = backup.pipeline(job, dest, { backup.pg_dump(job), backup.digest("plain"), backup.verifier(job),
--     backup.compressor(job), backup.encryptor(job), backup.digest("stored"), trust.blocks(job),
--     backup.progress(), dest:sink() })
--   local m = backup.manifest(job, dest, r)
--   trust.seal_and_sign(job, dest, m, r, signer)   (lib.trust; signer from trust.signer(o))
--   dest:commit(m)                             the manifest, written only if absent: the commit marker
--   backup.report(job, dest, r)
-- backup.run(opts) runs these steps with the default stages, for Lua callers:
--   local b = require("lib.backup").run{ db = url, to = "db_backups", suffix = "local" }
--   -- b.path, b.manifest_path, b.manifest, b.result (what each stage saw)
local archive = require "pgvault.archive"
local dump = require "pgvault.dump"
local pgvault = require "pgvault"
local stream = require "pgvault.stream"
local collation = require "lib.collation"
local database = require "lib.database"
local destination = require "lib.destination"
local json = require "lib.json"
local manifest = require "lib.manifest"
local naming = require "lib.naming"
local pipeline = require "lib.pipeline"
local s3cli = require "lib.s3cli"

local backup = {}

backup.DEFAULT_DIR = destination.DEFAULT
backup.DEFAULT_SUFFIX = "local"
backup.COMPRESSIONS = { zstd = true, pg = true, none = true }

-- The command line of scripts/backup.lua (lib.cli's spec).
backup.CLI = {
  usage = "pgvault backup --db URL [--to DIR] [--suffix NAME] [--compress zstd|pg|none] [--level N] "
    .. "[-r RECIPIENT]... [-R FILE]...",
  summary = "Dumps the database with pg_dump (custom format) into DIR/YYYYMMDDHHMMSS_<suffix>.backup\n"
    .. "(UTC) plus <name>.manifest.json, written once the archive is complete. By default pg_dump\n"
    .. "writes an uncompressed archive that pgvault compresses with zstd on every core into\n"
    .. "….backup.zst ('zstd -d' gives back a plain archive); --compress pg keeps pg_dump's own\n"
    .. "gzip in a plain .backup, none stores it raw. A second backup in the same second into the\n"
    .. "same place is named YYYYMMDDHHMMSS-2_<suffix>…; no backup is ever overwritten. Prints the\n"
    .. "archive's path last on stdout. If pg_dump fails or is killed, nothing is left under the\n"
    .. "final name.",
  options = s3cli.with_options({
    { "db", "d", "URL", "the database (postgresql://user@host:port/db or a conninfo string)" },
    { "to", "o", "DIR", "where to write: a directory or s3://BUCKET/PREFIX/ (default db_backups)" },
    { "suffix", "s", "NAME", "environment name in the file name (default local)" },
    { "compress", "c", "METHOD", "zstd (default), pg or none" },
    { "level", "l", "N", "compression level (zstd 1-19, default 3; pg 1-9, default 6)" },
    { "pg-bin", nil, "DIR", "directory of the pg_dump to use (default: the newest that fits the server)" },
    { "recipient", "r", "RECIPIENT", "encrypt the backup to an age recipient (….backup.zst.age)", multi = true },
    { "recipients-file", "R", "FILE", "encrypt to every age recipient listed in FILE", multi = true },
  }, { upload = true }),
  epilog = "The password may be in the URL, PGPASSWORD or ~/.pgpass; it never reaches a command line.",
}

local function usage(fmt, ...)
  pgvault.raise("usage", string.format(fmt, ...))
end

-- The compression settings of `o` -> compress, level; raises "usage".
local function compression(o)
  local compress = o.compress or "zstd"
  if not backup.COMPRESSIONS[compress] then
    usage("--compress must be zstd, pg or none, not '%s'", tostring(compress))
  end
  local level = o.level and math.tointeger(tonumber(o.level))
  if o.level and not level then usage("--level must be an integer, not '%s'", tostring(o.level)) end
  if compress == "zstd" then
    level = level or 3
    if level < 1 or level > 19 then usage("--level for zstd must be 1..19, not %d", level) end
  elseif compress == "pg" then
    level = level or 6
    if level < 1 or level > 9 then usage("--level for pg (gzip) must be 1..9, not %d", level) end
  elseif level then
    usage("--level makes no sense with --compress none")
  end
  return compress, level
end

-- The age recipients of -r and -R, checked before anything runs.
local function recipients(o)
  if #(o.recipient or {}) == 0 and #(o.recipients_file or {}) == 0 and not o.recipients then return nil end
  local crypto = require "pgvault.crypto"
  local list = {}
  for _, r in ipairs(o.recipients or {}) do list[#list + 1] = r end
  for _, r in ipairs(o.recipient or {}) do
    local ok, checked = pcall(crypto.check_recipient, r)
    if not ok then usage("-r/--recipient: %s", tostring(type(checked) == "table" and checked.message or checked)) end
    list[#list + 1] = checked
  end
  for _, f in ipairs(o.recipients_file or {}) do
    if not require("pgvault.fs").exists(f) then
      usage("-R/--recipients-file: no file %s (it lists age recipients, one a line, as 'pgvault keygen -y KEY' prints "
        .. "them)", f)
    end
    for _, r in ipairs(crypto.read_recipients(f)) do list[#list + 1] = r end
  end
  -- the encryptor refuses some mixes (post-quantum with X25519): say so now
  local ok, stage = pcall(crypto.encryptor, { recipients = list })
  if not ok then
    local why = tostring(type(stage) == "table" and stage.message or stage)
    usage("-r/-R: %s", (why:gsub("^.-bad argument #%d+ to '[^']*' %((.*)%)$", "%1")))
  end
  stage:release()
  return list
end

-- Checks and completes the options; raises "usage" on misuse.
function backup.options(o)
  o = o or {}
  if type(o.db) ~= "string" or o.db == "" then usage("missing --db URL (see 'pgvault backup --help')") end
  local r = {}
  for k, v in pairs(o) do r[k] = v end
  r.to = o.to or backup.DEFAULT_DIR
  if s3cli.is_s3(r.to) then
    local ok, err = pcall(require("pgvault.s3").parse_url, r.to)
    if not ok then usage("--to: %s", tostring(type(err) == "table" and err.message or err)) end
  end
  r.suffix = o.suffix or backup.DEFAULT_SUFFIX
  if not naming.valid_env(r.suffix) then
    usage("--suffix '%s' must be letters, digits, '-' or '_' (it becomes part of the file name)", r.suffix)
  end
  r.compress, r.level = compression(o)
  r.recipients = recipients(o)
  r.time = o.time or os.time()
  r.s3 = o.s3 or s3cli.opts(o)
  return r
end

-- What the database says about itself, over one short connection: name,
-- version, its properties (lib.database), and the notices of the
-- connection (the collation warning arrives as one: said with pg_dump's,
-- once, by backup.report).
local function inspect(db)
  local c <close> = database.connect(db, { log_notices = false })
  local info = c:query([[SELECT current_database() AS name, current_setting('server_version') AS version,
    current_setting('server_version_num')::int AS version_num]])[1]
  info.properties = database.properties(c)
  info.notices = c:notices()
  return info
end

-- Step 1: the options checked, the database asked who it is, a pg_dump
-- that can dump it found (before any file exists). Returns the job every
-- later step takes.
function backup.plan(opts)
  local job = backup.options(opts)
  job.info = inspect(job.db)
  job.bin = dump.find_bin { program = "pg_dump", server_version = job.info.version_num, pg_bin = job.pg_bin }
  return job
end

-- Step 2: where the backup goes (a directory is created if need be).
function backup.destination(job)
  return destination.open(job.to, { s3 = job.s3 })
end

-- The stages. Each returns a stage, or false when the options leave it out.
function backup.pg_dump(job)
  return dump.pg_dump { db = database.with_session_options(job.db), compress = job.compress == "pg" and job.level or 0,
    server_version = job.info.version_num, pg_bin = job.pg_bin, log_warnings = false }
end

function backup.digest(label)
  return stream.sha256 { label = label }
end

-- Parses the archive as it passes: a malformed or cut-off dump fails the
-- run, so it is never committed; its summary goes into the manifest.
function backup.verifier(job)
  return job.verify ~= false and archive.verifier { label = "archive" }
end

function backup.compressor(job)
  return job.compress == "zstd" and stream.zstd { level = job.level, threads = job.threads or 0 }
end

-- age encryption to the recipients of -r/-R, after compression.
function backup.encryptor(job)
  return job.recipients ~= nil and require("pgvault.crypto").encryptor { recipients = job.recipients }
end

-- The meter: drawn only on a terminal, and not at all with --quiet.
backup.progress = pipeline.progress

-- The default stages, in order (what scripts/backup.lua lists).
backup.STAGES = { "pg_dump", "digest plain", "verifier", "compressor", "encryptor", "digest stored", "blocks",
  "progress", "sink" }

-- The SHA-256 of each block as stored (lib.trust): a restore checks each
-- block before it uses its bytes.
function backup.blocks(job)
  return require("lib.trust").blocks(job)
end

function backup.stages(job, dest)
  local out = {}
  for _, step in ipairs(backup.STAGES) do
    local name, arg = step:match("^(%S+) ?(.*)$")
    if name == "sink" then
      out[#out + 1] = dest:sink()
    else
      out[#out + 1] = backup[name](arg ~= "" and arg or job)
    end
  end
  return out
end

-- The name's extension and the manifest's layers follow the stages that
-- actually run: ".zst" for a zstd stage, ".age" for an encryptor.
local function layers_of(stages)
  local has = {}
  for _, s in ipairs(stages) do
    if stream.is_stage(s) then has[s:name()] = true end
  end
  return { zstd = has.zstd == true, age = has.encrypt == true }
end

local function sink_last(stages, dest)
  local n = #stages
  if stages[n] ~= dest.SINK then
    pgvault.raise("usage", "the last stage of a backup must be dest:sink() (the stage that writes the archive)")
  end
  return n
end

-- Step 3: runs the stages (false ones left out). The destination reserves
-- the backup's name now, from the stages' layers, and its sink takes the
-- place of dest:sink(), which must be last.
function backup.pipeline(job, dest, list)
  local stages = pipeline.flatten(list)
  local n = sink_last(stages, dest)
  job.layers = layers_of(stages)
  local ext = (job.layers.zstd and ".zst" or "") .. (job.layers.age and ".age" or "")
  dest:reserve(naming.stamp(job.time), job.suffix, ext)
  stages[n] = dest:writer()
  log.info("backing up database %s (PostgreSQL %s) with pg_dump %s to %s", job.info.name, job.info.version,
    job.bin.version, dest.path)
  local ok, r = pcall(stream.run, stages)
  -- the server's and pg_dump's warnings, each said once, success or failure
  local seen = ok and r or (type(r) == "table" and r.result) or {}
  collation.log_warnings(job.info.notices, seen.pg_dump and seen.pg_dump.warnings)
  if not ok then
    if pgvault.is_error(r) then r.message = string.format("backup of %s failed: %s", job.info.name, r.message) end
    error(r, 0)
  end
  dest.archive_written = true
  return r
end

-- The verifier's summary as the manifest keeps it: without the block map
-- and how this run read it.
local function archive_summary(a)
  local s = {}
  for k, v in pairs(a) do if k ~= "blocks" and k ~= "read" then s[k] = v end end
  return s
end

-- Per-table COPY row counts from the verifier, for manifest.tables.
local function table_rows(a)
  local out = json.array()
  for _, t in ipairs(a.tables or {}) do
    if t.rows then out[#out + 1] = { schema = t.schema, name = t.name, rows = t.rows } end
  end
  return out
end

-- Step 4: what the manifest records (lib.manifest.FIELDS).
function backup.manifest(job, dest, r)
  local method = job.layers.zstd and "zstd" or (job.compress == "pg" and "pg" or "none")
  local encryption
  if job.layers.age then
    local crypto = require "pgvault.crypto"
    local fingerprints = json.array()
    for i, rc in ipairs(job.recipients or {}) do fingerprints[i] = crypto.fingerprint(rc) end
    encryption = { method = "age", recipients = fingerprints }
  end
  return manifest.new {
    environment = job.suffix,
    database = job.info.name,
    server_version = job.info.version,
    server_version_num = job.info.version_num,
    pg_dump_version = r.pg_dump.version,
    compression = { method = method, level = method ~= "none" and job.level or nil,
      frame_size = method == "zstd" and r.zstd and r.zstd.frame_size or nil }, -- independent frames (verify)
    stored = { name = dest.name, bytes = r.stored.bytes, sha256 = r.stored.sha256 },
    plain = { bytes = r.plain.bytes, sha256 = r.plain.sha256 },
    encryption = encryption,
    properties = job.info.properties,
    archive = r.archive and archive_summary(r.archive) or nil,
    tables = r.archive and table_rows(r.archive) or nil,
  }
end

-- Step 6: the summary line.
function backup.report(job, dest, r)
  log.info("backup of %s complete: %s (%d bytes stored, %d bytes of archive) in %.1fs", job.info.name, dest.path,
    r.stored.bytes, r.plain.bytes, r.seconds)
end

-- The whole procedure with the default stages; returns
-- {path=, manifest_path=, manifest=, result=}.
function backup.run(opts)
  local trust = require "lib.trust"
  local job = backup.plan(opts)
  local signer <close> = trust.signer(job)
  local dest <close> = backup.destination(job)
  local r = backup.pipeline(job, dest, backup.stages(job, dest))
  local m = backup.manifest(job, dest, r)
  trust.seal_and_sign(job, dest, m, r, signer)
  local manifest_path = dest:commit(m)
  backup.report(job, dest, r)
  return { path = dest.path, manifest_path = manifest_path, manifest = m, result = r }
end

return backup
