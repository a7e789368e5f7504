-- Per-table row counts of a restored database against the counts the
-- archive's COPY data held (recorded in the manifest or read by the
-- verifier), shared by restore and the restore drill of verify.
--   rowcheck.compare(conn, {{schema=, name=, rows=}, ...}, {inserted=})
--     -> problems, checked, how ({stats=N, counted=N})
--
-- Two ways to know a table's rows:
--  * count(*) FROM ONLY the table: a full scan of every table, which on a
--    big database is minutes of reading after the restore itself;
--  * with inserted=true (PostgreSQL 15 and later), the rows the server
--    counted as inserted into each table (pg_stat_get_tuples_inserted).
--    A session's counts reach shared memory before the session leaves
--    pg_stat_activity, so once no other client is connected to the new
--    database (pg_restore's sessions have ended) the numbers are final.
--    They cost one query. During a restore nothing deletes rows (triggers
--    and rules arrive after the data), and an aborted COPY fails
--    pg_restore --exit-on-error, so rows inserted are the rows the table
--    holds. Any table whose number differs, or when the statistics cannot
--    be trusted (older server, sessions still connected), is counted with
--    count(*) before it is reported: a difference never rests on
--    statistics alone.
-- A batch of tables per count(*) query: one round trip, not one per table.
-- Tables that belong to an extension are its configuration tables
-- (pg_extension_config_dump, as PostGIS's spatial_ref_sys): the dump holds
-- only the rows the extension does not create itself, so they need at
-- least that many rows, not exactly. Counts are FROM ONLY: a table's COPY
-- data holds its own rows, not those of tables that inherit from it.
-- Each problem is {schema=, name=, got= (nil: no such table), want=, member=}.
local proc = require "pgvault.proc"

local rowcheck = {}

local BATCH = 100

local function relation(c, t) return c:quote_ident(t.schema) .. "." .. c:quote_ident(t.name) end
local function key(schema, name) return schema .. "\0" .. name end

-- Waits (up to `timeout` s) until this is the only client on the database.
local function alone(c, timeout)
  local deadline = proc.now() + timeout
  repeat
    local rows = c:query([[SELECT count(*) AS n FROM pg_stat_activity
      WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend']])
    if rows[1].n == 0 then return true end
    proc.sleep(0.005)
  until proc.now() > deadline
  return false
end

local function inserted(c)
  local out = {}
  for _, r in ipairs(c:query([[SELECT n.nspname AS schema, c.relname AS name,
      pg_stat_get_tuples_inserted(c.oid) AS n
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r']])) do
    out[key(r.schema, r.name)] = r.n
  end
  return out
end

local function count_all(c, tables, idx, got)
  for first = 1, #idx, BATCH do
    local last = math.min(first + BATCH - 1, #idx)
    local cols = {}
    for j = first, last do
      cols[#cols + 1] = string.format("(SELECT count(*) FROM ONLY %s) AS c%d", relation(c, tables[idx[j]]), j)
    end
    local ok, rows = pcall(c.query, c, "SELECT " .. table.concat(cols, ", "))
    for j = first, last do
      if ok then
        got[idx[j]] = rows[1]["c" .. j]
      else -- a table is missing: one at a time, to say which
        local tok, trows = pcall(c.query, c, "SELECT count(*) AS n FROM ONLY " .. relation(c, tables[idx[j]]))
        got[idx[j]] = tok and trows[1].n or nil
      end
    end
  end
end

function rowcheck.compare(c, tables, opts)
  opts = opts or {}
  local member = {}
  for _, r in ipairs(c:query([[SELECT n.nspname AS schema, c.relname AS name FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
    WHERE c.relkind IN ('r', 'p')]])) do
    member[key(r.schema, r.name)] = true
  end
  local function fits(t, n)
    if n == nil then return false end
    if member[key(t.schema, t.name)] then return n >= t.rows end
    return n == t.rows
  end
  local got, recount = {}, {}
  local stats = opts.inserted and c:server_version() >= 150000 and alone(c, 3) and inserted(c) or nil
  for i, t in ipairs(tables) do
    local n = stats and stats[key(t.schema, t.name)]
    if fits(t, n) then got[i] = n else recount[#recount + 1] = i end
  end
  count_all(c, tables, recount, got)
  local problems = {}
  for i, t in ipairs(tables) do
    if not fits(t, got[i]) then
      problems[#problems + 1] = { schema = t.schema, name = t.name, got = got[i], want = t.rows,
        member = member[key(t.schema, t.name)] or false }
    end
  end
  return problems, #tables, { stats = #tables - #recount, counted = #recount }
end

-- "schema.table has N rows, expected M" (or "at least M", or "no table").
function rowcheck.describe(p, expected)
  return string.format("%s.%s has %s rows, %s %s%d", p.schema, p.name:gsub("[\r\n]", " "),
    p.got and tostring(p.got) or "no table", expected or "expected",
    p.member and "(an extension's configuration table) at least " or "", p.want)
end

return rowcheck
