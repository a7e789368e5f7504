-- The steps of a restore, which scripts/restore.lua calls in order (copy
-- that file to change the procedure: README "Customising a workflow"):
--   local job <close> = restore.plan(o)        options checked, pg_restore found, the server reached, the target locked
--   local src <close> = restore.open(job)      the backup (file, DIR/latest, s3://…), its manifest and layers
--   restore.precheck(job, src)                 --in-place: what can be read is read before the drop
--   local db <close> = restore.create(job, src)    the new database; dropped again if a later step fails
--   restore.load(job, db, { src:reader(), restore.checksum(src), restore.unwrap(job, src),
--     restore.progress(), restore.pg_restore(job, src, db) })
--   restore.check_rows(job, src, db)           per-table row counts against the manifest
--   restore.carry_over(job, db)                the replaced database's ACL, settings, comment, limits
--   restore.swap(job, db)                      names swapped in a critical section
-- restore.run(opts) runs these steps, for Lua callers:
--   require("lib.restore").run{ src = path_or_url, db = url, jobs = 1, drop_old = false }
-- A restore goes into a NEW database (created like the one it replaces, or
-- like the backup's source when the manifest records it), is checked, and
-- only then takes the name; the old database is kept as <db>_old_<stamp>
-- (dropped with drop_old). in_place = true is the old procedure: drop the
-- database, create it again and restore into it.
local archive = require "pgvault.archive"
local dump = require "pgvault.dump"
local pgvault = require "pgvault"
local proc = require "pgvault.proc"
local stream = require "pgvault.stream"
local database = require "lib.database"
local layers = require "lib.layers"
local manifests = require "lib.manifest"
local naming = require "lib.naming"
local pipeline = require "lib.pipeline"
local rowcheck = require "lib.rowcheck"
local s3cli = require "lib.s3cli"
local source = require "lib.source"
local streamed = require "lib.streamed_restore"

local restore = {}

-- The command line of scripts/restore.lua (lib.cli's spec).
restore.CLI = {
  usage = "pgvault restore SRC --db URL [--jobs N] [--drop-old] [--in-place --yes] [-i FILE]...",
  summary = "Restores SRC (a .backup, .backup.zst or .age file, DIR/latest, or an s3:// object, streamed)\n"
    .. "into a NEW database created from template0 like the one it replaces (owner, encoding,\n"
    .. "locale; for a database that does not exist yet, like the backup's source when the manifest\n"
    .. "records it), checks it (pg_restore's exit status, the file's size and SHA-256 and per-table\n"
    .. "row counts against the manifest when it records them), gives it the replaced database's\n"
    .. "privileges, settings, comment and connection limit, then swaps names: the database named\n"
    .. "in URL becomes <db>_old_<YYYYMMDDHHMMSS> (unless --drop-old) and the restored one takes\n"
    .. "its name. Other sessions on the old database are terminated for the rename (each is\n"
    .. "logged); connections are refused meanwhile. A failed restore drops the new database and\n"
    .. "leaves the live one as it was.",
  options = s3cli.with_options {
    { "db", "d", "URL", "the database to restore (its name is kept; it need not exist yet)" },
    { "database", nil, "NAME", "with …/latest: the newest backup of database NAME (default: the one in URL)" },
    { "jobs", "j", "N", "parallel sessions: the data loads while the backup arrives (big tables on several), "
      .. "post-data with pg_restore -j N" },
    { "drop-old", nil, false, "drop the previous database after a successful swap" },
    { "count-rows", nil, false, "check row counts with count(*) on every table (slow on big databases) instead of "
      .. "the server's count of rows inserted (differences are always re-counted)" },
    { "in-place", nil, false, "old behaviour: read the whole backup, drop the database, create it again and "
      .. "restore into it" },
    { "yes", "y", false, "confirm --in-place" },
    { "pg-bin", nil, "DIR", "directory of the pg_restore to use (default: the newest here)" },
    { "identity", "i", "FILE", "age identity file to decrypt an encrypted (.age) backup", multi = true },
  },
  positionals = { { "SRC", "the backup: a file, DIR/latest, or s3://BUCKET/PREFIX/NAME (…/latest: the newest "
    .. "complete backup of the database; with --trust, the newest one a trusted key signed)" } },
}

local function usage(fmt, ...) pgvault.raise("usage", string.format(fmt, ...)) end

-- Checks and completes the options; raises "usage" on misuse.
function restore.options(o)
  local r = {}
  for k, v in pairs(o or {}) do r[k] = v end
  r.src = r.src or r.SRC
  if type(r.src) ~= "string" or r.src == "" then usage("a backup to restore is required") end
  if type(r.db) ~= "string" or r.db == "" then usage("missing --db URL (see 'pgvault restore --help')") end
  r.jobs = math.tointeger(tonumber(r.jobs or 1))
  if not r.jobs or r.jobs < 1 or r.jobs > 64 then
    usage("--jobs must be 1..64, not '%s'", tostring(r.jobs or o.jobs))
  end
  if r.yes and not r.in_place then usage("--yes confirms --in-place and means nothing without it") end
  if r.in_place and not r.yes then
    usage("--in-place drops the current database before restoring; add --yes to confirm")
  end
  if r.in_place and r.drop_old then usage("--drop-old has no meaning with --in-place") end
  local _, dbname = dump.conninfo(r.db)
  if not dbname or dbname == "" then usage("the URL must name the database to restore into") end
  r.target = dbname
  r.database = r.database or dbname
  r.identities = r.identities or layers.read_identities(r.identity)
  r.s3 = r.s3 or s3cli.opts(r)
  r.stamp = naming.stamp(r.time)
  r.seen_sessions = {}
  return r
end

local Job = {}
Job.__index = Job
function Job:close()
  if self.admin then self.admin:close() end
  self.admin = nil
end
Job.__close = Job.close

-- Step 1: the options checked, a pg_restore found, the server reached (its
-- maintenance database) and the target locked against a second restore;
-- what the target database is like, if it exists. Nothing is created yet.
function restore.plan(opts)
  local job = setmetatable(restore.options(opts), Job)
  job.bin = dump.find_bin { program = "pg_restore", pg_bin = job.pg_bin }
  job.admin = database.admin_connect(job.db)
  database.lock(job.admin, job.target)
  restore.sweep(job)
  job.live = database.properties(job.admin, job.target)
  return job
end

-- The comment a database carries while it is being restored into (until
-- its properties are carried over). It names the target and the database
-- itself, so that a database a killed restore left behind is known for
-- what it is, and never the live one (which has another name).
local function unfinished_note(target, name)
  return string.format("pgvault: unfinished restore of database %s into %s; the next restore of %s drops it",
    target, name, target)
end

-- Whether `name` is a database a restore of `target` made (its name:
-- <target>_restore_<stamp>[_N], lib.database.free_name) and that carries
-- the note of an unfinished one, or no comment at all (a restore killed
-- in its CREATE DATABASE, before the comment).
local function unfinished(target, name, note)
  local tail = name:match("(_restore_%d%d%d%d%d%d%d%d%d%d%d%d%d%d_%d+)$")
    or name:match("(_restore_%d%d%d%d%d%d%d%d%d%d%d%d%d%d)$")
  if not tail or name == target or naming.db_with_suffix(target, tail) ~= name then return false end
  return type(note) ~= "string" or note == unfinished_note(target, name)
end

-- What a restore of this target that was killed (SIGKILL, a crash) left:
-- its unfinished database, known by its name and comment. The target's
-- lock is held, so no other restore of it is running. A database that
-- cannot be dropped is a warning.
function restore.sweep(job)
  local ok, rows = pcall(job.admin.query, job.admin, "SELECT datname, shobj_description(oid, 'pg_database') "
    .. "AS note FROM pg_database WHERE datname LIKE '%\\_restore\\_%'")
  local found = false
  for _, r in ipairs(ok and rows or {}) do
    if unfinished(job.target, r.datname, r.note) then
      found = true
      log.warn("dropping database %s, left by a restore of %s that did not finish", r.datname, job.target)
      local dok, err = pcall(database.drop, job.admin, r.datname, job.seen_sessions)
      if not dok then log.warn("could not drop %s (%s): drop it by hand", r.datname, tostring(err)) end
    end
  end
  -- Killed in its swap, between keeping new sessions out of the target and
  -- letting them in again, a restore leaves the target refusing them.
  local live = found and database.properties(job.admin, job.target)
  if live and live.allow_connections == false then
    log.warn("database %s does not accept connections, as a restore killed during its swap leaves it: allowing "
      .. "them again", job.target)
    database.allow_connections(job.admin, job.target, true)
  end
end

-- Step 2: the backup, its manifest (required from a bucket) and layers.
function restore.open(job)
  local src = source.open(job.src, { s3 = job.s3, database = job.database, identities = job.identities,
    trust = job.trust, manifest = job.src:sub(1, 5) == "s3://" and "required" or "optional" })
  if layers.has(src.layers, "age") and #job.identities == 0 then
    src:close()
    usage("%s is encrypted (age): give the identity file that opens it with -i FILE", src.name)
  end
  if not src.manifest then
    log.info("restoring without a manifest (%s): size, checksum and row counts are not checked", src.why)
  end
  return src
end

-- Size and SHA-256 checked against the manifest as the bytes pass (the run
-- fails at its end when they differ); without a manifest, only counted.
function restore.checksum(src)
  local st = src.manifest and src.manifest.stored
  if st and (st.bytes or st.sha256) then
    return stream.sha256 { bytes = st.bytes, expect = st.sha256, what = src.name, label = "stored" }
  end
  return stream.sha256 { label = "stored" }
end

-- The filters that peel the backup's layers: age decryption (each chunk
-- authenticated before it passes), zstd decompression.
function restore.unwrap(job, src)
  return layers.stages(src.layers, { identities = job.identities, name = src.name })
end

restore.progress = pipeline.progress

local flatten = pipeline.flatten

-- Reads the first bytes of an object through its layers until the archive
-- verifier has seen the header and the whole TOC. A failure that does not
-- move when more is read is damage, not the cut.
local function probe(job, src)
  local last
  for _, size in ipairs({ 8 << 20, 128 << 20 }) do
    local head = src:read_head(size)
    local ok, err = pcall(stream.run, flatten { stream.string(head), restore.unwrap(job, src),
      archive.verifier { label = "archive" }, stream.discard() })
    if ok then return end
    local seen = type(err) == "table" and err.result and err.result.archive
    if seen and seen.toc_entries and #head == size then return end
    if #head < size or tostring(err) == last then error(err, 0) end
    last = tostring(err)
  end
  log.warn("%s: its table of contents is larger than 128 MiB; not checked before the drop", src.name)
end

local function read_whole(job, src)
  log.info("reading %s whole before the database is dropped", src.name)
  stream.run(flatten { src:reader(), restore.checksum(src), restore.unwrap(job, src), archive.verifier {},
    stream.discard() })
end

-- Before an in-place restore drops anything: a local backup is read whole
-- (layers, archive, size and digest); a bucket's object up to its TOC.
function restore.precheck(job, src)
  if not job.in_place then return end
  local ok, err = pcall(src.remote and probe or read_whole, job, src)
  if not ok then
    if pgvault.is_error(err) then
      local msg = err.message:gsub("^" .. src.name:gsub("%p", "%%%0") .. ": ", "")
      err.message = string.format("%s: %s (nothing was dropped)", src.name, msg)
    end
    error(err, 0)
  end
end

local Db = {}
Db.__index = Db

-- What the new database is made like: the database it replaces, else the
-- backup's source as its manifest records it.
local function model(job, src)
  return job.live or (src.manifest and src.manifest.properties) or nil
end

-- Step 4: the new database (with --in-place: the target, dropped and
-- created again). Closing it after a failure drops it again and says what
-- state the target is in.
function restore.create(job, src)
  local admin, props = job.admin, model(job, src)
  local db = setmetatable({ job = job, src = src, props = props }, Db)
  if job.in_place then
    log.warn("restoring in place: database %s is dropped and created again", job.target)
    db.name, db.in_place = job.target, true
    if job.live then
      database.terminate_sessions(admin, job.target, job.seen_sessions)
      database.drop(admin, job.target)
      db.dropped = true
    end
  else
    db.name = database.free_name(admin, job.target, "_restore_" .. job.stamp)
  end
  local ok, err = pcall(database.create, admin, db.name, props)
  if not ok then
    -- (interrupted or failed in its CREATE DATABASE, which the server may
    -- have finished all the same: the name is ours, free_name chose it)
    restore.drop_unfinished(job, db.name)
    error(err, 0)
  end
  db.created = true
  if not db.in_place then
    db.noted = pcall(admin.exec, admin, string.format("COMMENT ON DATABASE %s IS %s", admin:quote_ident(db.name),
      admin:quote_literal(unfinished_note(job.target, db.name))))
  end
  log.info("restoring %s into %s database %s", src.name, db.in_place and "the re-created" or "new", db.name)
  return db
end

-- Instead of restore.create: a database that exists already and is empty
-- (neon-restore creates it through Neon's API). Restore never drops it:
-- whoever created it decides what to do after a failure.
function restore.into(job, src, name)
  log.info("restoring %s into database %s", src.name, name)
  return setmetatable({ job = job, src = src, name = name, external = true, props = model(job, src) }, Db)
end

-- The sink: pg_restore reading the stream, or with --jobs N the streamed
-- parallel restore (lib.streamed_restore): N sessions load the data while
-- it arrives; post-data follows with pg_restore -j N.
function restore.pg_restore(job, src, db)
  local args = { "--exit-on-error" }
  for _, a in ipairs(job.restore_args or {}) do args[#args + 1] = a end
  db.restore_args = args
  db.conninfo = dump.conninfo(database.with_session_options(job.db), { dbname = db.name, password = true })
  if job.jobs == 1 then return dump.pg_restore { db = db.conninfo, args = args, pg_bin = job.pg_bin } end
  log.info("restoring %s on %d sessions as it arrives", src.name, job.jobs)
  return streamed.sink(job, db)
end

-- Step 5: runs the stages (nested lists are flattened, false left out);
-- with --jobs, then the rest of the streamed restore (post-data).
function restore.load(job, db, stages)
  local t0 = proc.now()
  local ok, r = pcall(function()
    local r = stream.run(flatten(stages))
    streamed.finish(job, db, r)
    return r
  end)
  streamed.cleanup(db)
  if not ok then error(r, 0) end
  log.debug("the archive was loaded in %.2f s", proc.now() - t0)
  if r.unzstd then
    log.debug("zstd decoded on %d threads: %d of %d frames in parallel", r.unzstd.threads, r.unzstd.frames_in_parallel,
      r.unzstd.frames)
  end
  db.result = r
  return r
end

-- Step 6: per-table row counts against the manifest (lib.rowcheck: rows
-- inserted as the server counted them, any difference re-counted with
-- count(*); --count-rows counts every table).
function restore.check_rows(job, src, db)
  local counts = manifests.row_counts(src.manifest)
  if not counts then
    log.info("the manifest has no per-table row counts: checked pg_restore's status%s only",
      src.manifest and " and the checksum" or "")
    db.checked = 0
    return 0
  end
  local c <close> = database.connect((dump.conninfo(job.db, { dbname = db.name, password = true })))
  local tables = {}
  for name, rows in pairs(counts) do
    local schema, tbl = name:match("^(.-)%.(.+)$")
    tables[#tables + 1] = { schema = schema, name = tbl, rows = rows }
  end
  table.sort(tables, function(a, b) return a.schema .. "." .. a.name < b.schema .. "." .. b.name end)
  local problems, checked, how = rowcheck.compare(c, tables, { inserted = not job.count_rows })
  if #problems > 0 then
    local bad = {}
    for i = 1, math.min(#problems, 3) do bad[i] = rowcheck.describe(problems[i]) end
    pgvault.raise("verify", string.format("the restored database does not match the manifest: %s%s",
      table.concat(bad, "; "), #problems > 3 and string.format(" (and %d more)", #problems - 3) or ""))
  end
  log.debug("row counts: %d tables by the server's count of inserted rows, %d by count(*)", how.stats, how.counted)
  log.info("row counts of %d tables match the manifest", checked)
  db.checked = checked
  return checked
end

-- Step 7: the properties pg_dump leaves out of the archive (ACL, settings,
-- comment, connection limit, security labels), from the database being
-- replaced, else from the manifest.
function restore.carry_over(job, db)
  if db.noted then
    job.admin:exec("COMMENT ON DATABASE " .. job.admin:quote_ident(db.name) .. " IS NULL")
    db.noted = false
  end
  if not db.props then return 0 end
  local missed = database.apply(job.admin, db.name, db.props)
  if missed > 0 then
    log.warn("%d properties of database %s could not be carried over (see above)", missed, job.target)
  end
  return missed
end

-- Swaps names: the live database out of the way (kept as db.old), the
-- new one in, each failure putting back what it changed.
local function swap_names(job, db)
  local admin, target = job.admin, job.target
  if job.live then
    local old = database.free_name(admin, target, "_old_" .. job.stamp)
    -- keep new sessions out while we rename (the owner may do this)
    local allowed = job.live.allow_connections ~= false
    local locked = allowed and pcall(database.allow_connections, admin, target, false)
    local tok, terr = pcall(database.terminate_sessions, admin, target, job.seen_sessions)
    local rok, rerr = false, terr
    if tok then rok, rerr = pcall(database.rename, admin, target, old, job.seen_sessions) end
    if locked then pcall(database.allow_connections, admin, rok and old or target, true) end
    if not rok then
      pgvault.raise("pg", string.format("cannot rename database %s out of the way (%s): it is unchanged", target,
        tostring(rerr)))
    end
    db.old = old
  end
  local sok, serr = pcall(database.rename, admin, db.name, target, job.seen_sessions)
  if not sok then
    if db.old and not pcall(database.rename, admin, db.old, target, job.seen_sessions) then
      db.moved = true
      pgvault.raise("pg", string.format("cannot rename %s to %s (%s), nor put %s back: rename it to %s by hand",
        db.name, target, tostring(serr), db.old, target))
    end
    db.old = nil
    pgvault.raise("pg", string.format("cannot rename %s to %s (%s); the original database was put back", db.name,
      target, tostring(serr)))
  end
  db.new, db.name, db.swapped = db.name, target, true
end

-- Step 8: the restored database takes the name. Runs as a critical
-- section: a Ctrl-C waits for it to end, since stopping half-way could
-- leave the live database refusing connections or under another name.
-- With --drop-old the previous database is dropped afterwards.
function restore.swap(job, db)
  if db.in_place then
    db.swapped = true
    return
  end
  pgvault.critical(swap_names, job, db)
  if pgvault.signalled() then
    log.warn("interrupted during the swap, which was finished first: %s is the restored database%s", job.target,
      db.old and (", the previous one is kept as " .. db.old) or "")
  end
  if db.old and job.drop_old then
    database.drop(job.admin, db.old)
    log.info("dropped the previous database %s", db.old)
    db.old = nil
  end
end

-- How long a failed restore waits for the server to answer again (it
-- restarted: the failure may be that) to drop its unfinished database.
restore.RECONNECT_SECONDS = 30

-- Drops `name` over a new connection, once the server accepts one; true,
-- or false and why not.
local function drop_after_reconnect(job, name)
  local deadline, c, err = proc.now() + restore.RECONNECT_SECONDS, nil, nil
  local said = false
  repeat
    local ok, res = pcall(database.admin_connect, job.db)
    if ok then c = res break end
    err = res
    if not (type(res) == "table" and res.connect) or pgvault.signalled() then break end
    if not said then log.info("waiting for the server to answer again, to drop %s", name) end
    said = true
    proc.sleep(0.5)
  until proc.now() > deadline
  if not c then return false, err end
  if job.admin then job.admin:close() end
  job.admin = c
  return pcall(pgvault.uninterrupted, database.drop, c, name)
end

-- Drops the unfinished database `name` (after Ctrl-C too; over a new
-- connection if the server restarted); a failure is logged.
function restore.drop_unfinished(job, name)
  local ok, err = pcall(pgvault.uninterrupted, database.drop, job.admin, name)
  if not ok then ok, err = drop_after_reconnect(job, name) end
  if not ok then log.error("could not drop the unfinished database %s (%s): drop it by hand", name, tostring(err)) end
end

-- What the target is like after a failure, for the error message.
local function after_failure(job, db)
  if db.in_place and db.dropped then
    local ok = pcall(pgvault.uninterrupted, function()
      database.drop(job.admin, job.target)
      database.create(job.admin, job.target, db.props)
    end)
    local prev = db.src:previous(job.database)
    return string.format("database %s was dropped before the restore and is now %s: restore a backup into it%s",
      job.target, ok and "empty" or "incomplete", prev and (", e.g. 'pgvault restore " .. prev .. " --db URL'") or "")
  end
  restore.drop_unfinished(job, db.name)
  if db.moved then return nil end
  if job.live then return string.format("database %s left as it was", job.target) end
  return string.format("database %s was not created", job.target)
end

-- A database that a failure (or Ctrl-C) left before the swap is dropped
-- (even when a signal stopped the restore: that is what the drop cleans up
-- after), and the error says what state the target is in.
function Db:close(err)
  if self.swapped or self.closed or self.external or not self.created then return end
  self.closed = true
  if err == nil then
    log.info("the restored database is %s (it was not swapped in)", self.name)
    return
  end
  local state = after_failure(self.job, self)
  if not state then return end
  if pgvault.is_error(err) then
    err.message = string.format("restore into %s failed (%s): %s", self.job.target, state, err.message)
  else
    log.error("restore into %s failed: %s", self.job.target, state)
  end
end
Db.__close = Db.close

-- The line scripts/restore.lua prints.
function restore.summary(job, src, db)
  if db.old then
    return string.format("restored %s into %s; the previous database is kept as %s", src.name, job.target, db.old)
  end
  return string.format("restored %s into %s", src.name, job.target)
end

-- The whole procedure; returns {database=, old=, new=, row_counts_checked=, result=}.
function restore.run(opts)
  local job <close> = restore.plan(opts)
  local src <close> = restore.open(job)
  local trust = require "lib.trust"
  trust.authenticate(job, src)
  restore.precheck(job, src)
  local db <close> = restore.create(job, src)
  restore.load(job, db, { src:reader(), trust.verifier(src), restore.checksum(src), restore.unwrap(job, src),
    restore.progress(), restore.pg_restore(job, src, db) })
  restore.check_rows(job, src, db)
  restore.carry_over(job, db)
  restore.swap(job, db)
  return { database = job.target, old = db.old, new = db.new, row_counts_checked = db.checked, result = db.result }
end

-- For neon-restore: loads and checks a backup in an existing, empty
-- database `dbname` (opts as run's); returns {row_counts_checked=,
-- result=, manifest=}.
function restore.load_into(opts, dbname)
  local job <close> = restore.plan(opts)
  local src <close> = restore.open(job)
  local trust = require "lib.trust"
  trust.authenticate(job, src)
  local db = restore.into(job, src, dbname)
  restore.load(job, db, { src:reader(), trust.verifier(src), restore.checksum(src), restore.unwrap(job, src),
    restore.progress(), restore.pg_restore(job, src, db) })
  restore.check_rows(job, src, db)
  return { row_counts_checked = db.checked, result = db.result, manifest = src.manifest }
end

-- (admin connection, database name) -> sessions ended, each logged once.
restore.terminate_sessions = database.terminate_sessions

return restore
