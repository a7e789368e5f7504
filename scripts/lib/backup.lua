-- The backup procedure, usable from any workflow:
--   local backup = require "lib.backup"
--   local b = backup.run{ db = url, to = "db_backups", suffix = "local",
--                         compress = "zstd", level = 3 }
--   -- b.path, b.manifest_path, b.manifest, b.result (what each stage saw)
-- pg_dump writes a custom-format archive that flows through a list of
-- stages (see backup.stages) into DIR/YYYYMMDDHHMMSS_<suffix>.backup[.zst];
-- the manifest is written once the archive is complete.
local archive = require "pgvault.archive"
local dump = require "pgvault.dump"
local fs = require "pgvault.fs"
local pg = require "pgvault.pg"
local pgvault = require "pgvault"
local stream = require "pgvault.stream"
local collation = require "lib.collation"
local manifest = require "lib.manifest"
local naming = require "lib.naming"

local backup = {}

backup.DEFAULT_DIR = "db_backups"
backup.DEFAULT_SUFFIX = "local"
backup.COMPRESSIONS = { zstd = true, pg = true, none = true }

local function fail(kind, fmt, ...)
  pgvault.raise(kind, string.format(fmt, ...))
end

-- What the database says about itself, over one short connection. The
-- collation WARNING, if any, arrives here as a notice.
local function inspect(db)
  local c <close> = pg.connect(db, { log_notices = false })
  local rows = c:query([[SELECT current_database() AS name, current_setting('server_version') AS version,
    current_setting('server_version_num')::int AS version_num]])
  local info = rows[1]
  info.notices = c:notices() -- said with pg_dump's, once (lib.collation.log_warnings)
  return info
end

-- Checks and completes the options; raises "usage" on misuse.
function backup.options(o)
  o = o or {}
  if type(o.db) ~= "string" or o.db == "" then fail("usage", "a database URL is required (--db URL)") end
  local r = {}
  for k, v in pairs(o) do r[k] = v end
  r.to = o.to or backup.DEFAULT_DIR
  r.suffix = o.suffix or backup.DEFAULT_SUFFIX
  if not naming.valid_env(r.suffix) then
    fail("usage", "suffix '%s' must be letters, digits, '-' or '_' (it becomes part of the file name)", r.suffix)
  end
  r.compress = o.compress or "zstd"
  if not backup.COMPRESSIONS[r.compress] then
    fail("usage", "--compress must be zstd, pg or none, not '%s'", tostring(r.compress))
  end
  local level = o.level and math.tointeger(tonumber(o.level))
  if o.level and not level then fail("usage", "--level must be an integer, not '%s'", tostring(o.level)) end
  if r.compress == "zstd" then
    level = level or 3
    if level < 1 or level > 19 then fail("usage", "--level for zstd must be 1..19") end
  elseif r.compress == "pg" then
    level = level or 6
    if level < 1 or level > 9 then fail("usage", "--level for pg (gzip) must be 1..9") end
  elseif level then
    fail("usage", "--level makes no sense with --compress none")
  end
  r.level = level
  return r
end

-- The pipeline, as an ordered list of stages. Other capabilities slot in
-- here: a tap on the plain archive (the archive verifier, label "archive",
-- whose report becomes manifest.archive), a filter after compression (the
-- age encryptor, adding ".age" to the name), another sink (S3).
function backup.stages(o, server_version_num, path)
  local stages = {
    dump.pg_dump { db = o.db, compress = o.compress == "pg" and o.level or 0,
      server_version = server_version_num, pg_bin = o.pg_bin, log_warnings = false },
    stream.sha256 { label = "plain" },
  }
  -- The archive verifier reads the dump as it passes: a malformed or cut
  -- off archive fails the pipeline, so it is never committed.
  if o.verify ~= false then stages[#stages + 1] = archive.verifier { label = "archive" } end
  for _, tap in ipairs(o.taps or {}) do stages[#stages + 1] = tap end
  if o.compress == "zstd" then stages[#stages + 1] = stream.zstd { level = o.level, threads = o.threads or 0 } end
  for _, filter in ipairs(o.filters or {}) do stages[#stages + 1] = filter end
  stages[#stages + 1] = stream.sha256 { label = "stored" }
  -- The meter draws only on a terminal, and not at all with --quiet.
  local quiet = log.level() ~= "info" and log.level() ~= "debug"
  stages[#stages + 1] = stream.progress { label = "progress", tty = not quiet and nil }
  stages[#stages + 1] = o.sink and o.sink(path) or stream.file_writer(path, { no_clobber = true, mode = 384 })
  return stages
end

-- The verifier's summary as the manifest keeps it: without the block map.
function backup.archive_summary(a)
  local s = {}
  for k, v in pairs(a) do if k ~= "blocks" then s[k] = v end end
  return s
end

-- Per-table COPY row counts from the verifier, for manifest.tables.
function backup.table_rows(a)
  local out = {}
  for _, t in ipairs(a.tables or {}) do
    if t.rows then out[#out + 1] = { schema = t.schema, name = t.name, rows = t.rows } end
  end
  return out
end

function backup.extension(o)
  return (o.compress == "zstd" and ".zst" or "") .. (o.extension or "")
end

-- Runs one backup; returns {path=, manifest_path=, manifest=, result=}.
function backup.run(opts)
  local o = backup.options(opts)
  local info = inspect(o.db)
  -- Fail at once, before any file exists, when no pg_dump is new enough.
  local bin = dump.find_bin { program = "pg_dump", server_version = info.version_num, pg_bin = o.pg_bin }
  local remote = o.to:sub(1, 5) == "s3://"
  if not o.sink and not remote then
    fs.mkdir_p(o.to)
    if not fs.writable(o.to) then fail("io", "cannot write to %s: check its permissions", o.to) end
  end
  if remote then
    -- A bucket: the archive streams into a multipart upload (aborted on any
    -- failure), the manifest is uploaded after it as the commit marker.
    local s3 = require "pgvault.s3"
    o.sink = function(url)
      local so = {}
      for k, v in pairs(o.s3 or {}) do so[k] = v end
      so.url = url
      return s3.writer(so)
    end
    o.write_manifest = function(url, m)
      local client <close> = s3.client(o.s3)
      local ok, err = pcall(client.put, client, naming.manifest_path(url), manifest.encode(m),
        { content_type = "application/json" })
      if not ok then
        pcall(client.delete, client, url) -- no archive without its commit marker
        error(err, 0)
      end
      return naming.manifest_path(url)
    end
  end
  local stamp = naming.stamp(o.time)
  local dir = remote and o.to:gsub("/+$", "") or o.to
  local path = dir .. "/" .. naming.archive_name(stamp, o.suffix, backup.extension(o))
  log.info("backing up database %s (PostgreSQL %s) with pg_dump %s to %s", info.name, info.version,
    bin.version, path)

  local ok, r = pcall(stream.run, backup.stages(o, info.version_num, path))
  local seen = ok and r or (type(r) == "table" and r.result) or {}
  collation.log_warnings(info.notices, seen.pg_dump and seen.pg_dump.warnings)
  if not ok then
    local e = r
    if pgvault.is_error(e) then
      e.message = string.format("backup of %s failed: %s", info.name, e.message)
      error(e, 0)
    end
    error(e, 0)
  end

  local m = manifest.new {
    environment = o.suffix,
    database = info.name,
    server_version = info.version,
    server_version_num = info.version_num,
    pg_dump_version = r.pg_dump.version,
    compression = { method = o.compress, level = o.level },
    stored = { name = path:match("[^/]+$"), bytes = r.stored.bytes, sha256 = r.stored.sha256 },
    plain = { bytes = r.plain.bytes, sha256 = r.plain.sha256 },
    archive = r.archive and backup.archive_summary(r.archive) or nil,
    tables = r.archive and backup.table_rows(r.archive) or nil,
    encryption = o.encryption,
  }
  if o.annotate then o.annotate(m, r) end
  local mok, mpath = pcall(o.write_manifest or manifest.write, path, m)
  if not mok then
    -- Without its manifest the archive is not committed: do not leave it.
    if not o.sink then os.remove(path) end
    error(mpath, 0)
  end
  log.info("backup complete: %s (%d bytes stored, %d bytes of archive) in %.1fs", path, r.stored.bytes,
    r.plain.bytes, r.seconds)
  return { path = path, manifest_path = mpath, manifest = m, result = r }
end

return backup
