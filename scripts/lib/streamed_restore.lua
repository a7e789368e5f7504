-- lib.streamed_restore: `restore --jobs N` that starts while the archive is
-- still arriving, from a file or straight from the bucket, with no full
-- temporary copy (issue 17). lib.restore uses it for --jobs > 1:
--
--   restore.load(job, db, { src:reader(), restore.checksum(src), restore.unwrap(job, src),
--     streamed.sink(job, db) })          -- pre-data and the data, as the bytes arrive
--   streamed.finish(job, db, result)     -- sequence values, then post-data with pg_restore -j N
--
-- The sink is archive.restorer: it writes the header and TOC to a private
-- temporary file and, once the TOC is whole, runs pg_restore
-- --section=pre-data on it while the data keeps coming; each table's data
-- goes into one of N sessions (COPY ... FROM stdin through libpq in this
-- process: no client program, no password outside it) as its block
-- arrives, large objects through lo_open/lo_write; a block that arrives while
-- every session is busy waits in a bounded spill (`spill` bytes, 64 MiB by
-- default), so the stream only waits once the spill is full; a table's COPY
-- text is cut every `split` bytes (32 MiB by default) into pieces that the
-- sessions load side by side, so one big table is loaded on N connections
-- (pg_restore -j loads a table on one). After the
-- stream: the data section's entries without a block (sequence values) and
-- post-data (indexes, constraints, triggers) with pg_restore -j N on the TOC
-- file, which pg_restore reads as any archive. The result is what
-- pg_restore -j N gives (tests/bindings/archive_restorer_test.lua compares
-- the schema, row counts, contents and large objects).
local archive = require "pgvault.archive"
local dump = require "pgvault.dump"
local fs = require "pgvault.fs"
local pg = require "pgvault.pg"
local stream = require "pgvault.stream"

local streamed = {}

streamed.DEFAULT_SPILL = 64 << 20

-- The sink for the restore pipeline. `job`: jobs, pg_bin, spill, and the
-- extra pg_restore arguments (restore_args); `db`: conninfo (where to
-- restore). Records in db.streamed what finish needs.
function streamed.sink(job, db)
  local tmp = fs.tmpdir("pgvault-restore")
  fs.chmod(tmp, 448)
  local toc = tmp .. "/toc.backup"
  local args = { "--exit-on-error" }
  for _, a in ipairs(job.restore_args or {}) do args[#args + 1] = a end
  local function pg_restore(section, jobs, extra)
    local a = { "--section=" .. section }
    for _, x in ipairs(args) do a[#a + 1] = x end
    for _, x in ipairs(extra or {}) do a[#a + 1] = x end
    return dump.pg_restore { db = db.conninfo, file = toc, jobs = jobs, args = a, pg_bin = job.pg_bin }
  end
  -- the sessions connect now: a refused connection stops the restore
  -- before a byte is read (cleanup closes those already open). Each needs
  -- a session of its own (its settings, then COPY), as pg_restore does:
  -- Neon's pooled host is swapped for the direct one (pg_restore's stage
  -- says so in its warning).
  local workers = {}
  db.streamed = { tmp = tmp, toc = toc, pg_restore = pg_restore, sessions = workers }
  local direct = pg.direct_url(db.conninfo)
  for i = 1, job.jobs do workers[i] = pg.connect(direct) end
  return archive.restorer { toc_file = toc, predata = pg_restore("pre-data", 1), workers = workers,
    spill = job.spill or streamed.DEFAULT_SPILL, split = job.split, list = true, label = "archive" }
end

-- pg_restore's list of the TOC with every entry that had a data block
-- commented out: what the data section still needs (sequence values).
local function list_without_blocks(summary)
  local seen = {}
  for _, b in ipairs(summary.blocks or {}) do seen[b.dump_id] = true end
  return (summary.list:gsub("\n(%d+);", function(id)
    return seen[tonumber(id)] and ("\n;" .. id .. ";") or nil
  end))
end

-- After the stream: the data section's entries that have no data block,
-- then post-data on N connections. Removes the temporary directory.
function streamed.finish(job, db, result)
  local s = db.streamed
  if not s then return end
  local ok, err = pcall(function()
    local list = s.tmp .. "/data.list"
    fs.write_file(list, list_without_blocks(result.archive), { mode = 384 })
    stream.run { s.pg_restore("data", 1, { "-L", list }), stream.discard() }
    stream.run { s.pg_restore("post-data", job.jobs), stream.discard() }
  end)
  streamed.cleanup(db)
  if not ok then error(err, 0) end
end

-- The temporary directory and the sessions go, whatever happened (a
-- session the restorer ran is closed already).
function streamed.cleanup(db)
  local s = db.streamed
  if not s then return end
  for _, c in ipairs(s.sessions or {}) do c:close() end
  if s.tmp then pcall(fs.remove_tree, s.tmp) end
  s.tmp = nil
end

return streamed
