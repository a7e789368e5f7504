-- The restore drill of `pgvault verify --restore-into URL`: creates the
-- scratch database URL names (it must not exist), restores the backup into
-- it with pg_restore, compares each table's row count with the archive's
-- COPY row count, and drops the scratch database whatever happened.
local dump = require "pgvault.dump"
local pgvault = require "pgvault"
local proc = require "pgvault.proc"
local stream = require "pgvault.stream"
local database = require "lib.database"
local layers = require "lib.layers"
local rowcheck = require "lib.rowcheck"

local drill = {}

-- o: src, source (optional: a function giving the source stage, default
-- the file src), verifier (optional: a stage right after it, lib.trust's
-- block check), layers (from layers.detect), identity_files, url, summary,
-- threads (zstd decoding, as layers.stages).
-- Returns {database=, tables=, problems={...}, seconds=}.
function drill.run(o)
  local _, name = dump.conninfo(o.url)
  if not name or name == "" then pgvault.raise("usage", "--restore-into URL must name a scratch database") end
  local admin <close> = database.admin_connect(o.url)
  if database.exists(admin, name) then
    pgvault.raise("exists", "database " .. name .. " already exists: --restore-into needs a new scratch " ..
      "database name (it is dropped afterwards)")
  end
  -- pg_restore --no-owner makes every object the drill's role's: the
  -- archive's code (index expressions, constraints, triggers) runs with its
  -- rights while it loads
  local role = admin:query("SELECT current_user AS name, rolsuper FROM pg_roles WHERE rolname = current_user")[1]
  if role and role.rolsuper then
    log.warn("the restore drill runs the backup's code as %s, a superuser: a backup from a place others can "
      .. "write may run any command on this server; give --restore-into a role with CREATEDB only", role.name)
  end
  admin:exec("CREATE DATABASE " .. admin:quote_ident(name) .. " TEMPLATE template0")
  local t0 = proc.now()
  local ok, res = pcall(function()
    local stages = { o.source and o.source() or stream.file_reader(o.src) }
    if o.verifier then stages[#stages + 1] = o.verifier end
    for _, s in ipairs(layers.stages(o.layers, { identity_files = o.identity_files, threads = o.threads })) do
      stages[#stages + 1] = s
    end
    stages[#stages + 1] = dump.pg_restore { db = dump.conninfo(o.url, { password = true }),
      args = { "--exit-on-error", "--no-owner", "--no-privileges" } }
    stream.run(stages)
    local c <close> = database.connect((dump.conninfo(o.url, { password = true })))
    local tables = {}
    for _, tb in ipairs(o.summary.tables) do
      if tb.rows and tb.kind == "TABLE DATA" then
        tables[#tables + 1] = { schema = tb.schema, name = tb.name, rows = tb.rows }
      end
    end
    local found, checked = rowcheck.compare(c, tables)
    local problems = require("lib.json").array()
    for _, p in ipairs(found) do problems[#problems + 1] = "restored " .. rowcheck.describe(p, "the archive") end
    return { tables = checked, problems = problems }
  end)
  local dok, derr = pcall(pgvault.uninterrupted, database.drop, admin, name)
  if not dok then log.error("could not drop the scratch database %s (%s): drop it by hand", name, tostring(derr)) end
  if not ok then
    if pgvault.is_error(res) then res.message = "restore drill into " .. name .. " failed: " .. res.message end
    error(res, 0)
  end
  res.database = name
  res.seconds = proc.now() - t0
  return res
end

return drill
