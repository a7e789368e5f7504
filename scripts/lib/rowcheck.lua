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
-- Counting must not run the restored database's code with our rights (the
-- restoring role is often a superuser; issue 11): every query runs with a
-- search path of built-in objects only (the database may carry its own,
-- putting a planted count() ahead of pg_catalog's), with row_security off
-- (a policy's functions never run: a table it would filter cannot be
-- counted and says so), and only on what is a table (relkind r or p): a
-- view of that name would run its functions as us, so it is reported.
-- Each problem is {schema=, name=, got= (nil: not counted), want=, member=,
-- why= (when not counted: no such table, not a table, the server's error)}.
local proc = require "pgvault.proc"
local database = require "lib.database"

local rowcheck = {}

local BATCH = 100

local function relation(c, t) return c:quote_ident(t.schema) .. "." .. c:quote_ident(t.name) end
local function key(schema, name) return schema .. "\0" .. name end

-- Runs fn(c) in a transaction with our search path and row_security off.
local function pinned(c, fn)
  c:exec("BEGIN")
  local ok, res, extra = pcall(function()
    c:exec("SET LOCAL search_path = " .. database.SEARCH_PATH)
    c:exec("SET LOCAL row_security = off")
    return fn(c)
  end)
  local cok, cerr = pcall(c.exec, c, ok and "COMMIT" or "ROLLBACK")
  if not ok then error(res, 0) end
  if not cok then error(cerr, 0) end
  return res, extra
end

-- Waits (up to `timeout` s) until this is the only client on the database.
-- Outside any transaction: inside one, pg_stat_activity stays as it was.
local function alone(c, timeout)
  local deadline = proc.now() + timeout
  repeat
    local n = pinned(c, function() return c:query([[SELECT count(*) AS n FROM pg_stat_activity
      WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend']])[1].n end)
    if n == 0 then return true end
    proc.sleep(0.005)
  until proc.now() > deadline
  return false
end

-- What each (schema, name) is: "r"/"p" (a table: counted), another
-- relkind, or nothing; and which tables belong to an extension.
local function catalog(c)
  local kinds, member = {}, {}
  for _, r in ipairs(c:query([[SELECT n.nspname AS schema, c.relname AS name, c.relkind AS kind,
      EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
              AND d.deptype = 'e') AS member
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace]])) do
    kinds[key(r.schema, r.name)] = r.kind
    if r.member and (r.kind == "r" or r.kind == "p") then member[key(r.schema, r.name)] = true end
  end
  return kinds, member
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

local KIND_NAMES = { v = "a view", m = "a materialized view", f = "a foreign table", S = "a sequence",
  c = "a composite type", i = "an index" }

-- count(*) of each table of `idx` whose kind is r or p, a batch per query;
-- why[i] says why one was not counted.
local function count_all(c, tables, idx, kinds, got, why)
  local countable = {}
  for _, i in ipairs(idx) do
    local kind = kinds[key(tables[i].schema, tables[i].name)]
    if kind == "r" or kind == "p" then
      countable[#countable + 1] = i
    else
      why[i] = kind and ("is " .. (KIND_NAMES[kind] or "not a table") .. ", not counted") or "no such table"
    end
  end
  for first = 1, #countable, BATCH do
    local last = math.min(first + BATCH - 1, #countable)
    local cols = {}
    for j = first, last do
      cols[#cols + 1] = string.format("(SELECT count(*) FROM ONLY %s) AS c%d", relation(c, tables[countable[j]]), j)
    end
    local ok, rows = pcall(pinned, c, function() return c:query("SELECT " .. table.concat(cols, ", ")) end)
    for j = first, last do
      local i = countable[j]
      if ok then
        got[i] = rows[1]["c" .. j]
      else -- one at a time, to say which and why
        local tok, trows = pcall(pinned, c, function()
          return c:query("SELECT count(*) AS n FROM ONLY " .. relation(c, tables[i]))
        end)
        got[i] = tok and trows[1].n or nil
        if not tok then why[i] = "cannot be counted: " .. (trows.message or tostring(trows)) end
      end
    end
  end
end

function rowcheck.compare(c, tables, opts)
  opts = opts or {}
  local kinds, member = pinned(c, catalog)
  local function fits(t, n)
    if n == nil then return false end
    if member[key(t.schema, t.name)] then return n >= t.rows end
    return n == t.rows
  end
  local got, recount, why = {}, {}, {}
  local stats = opts.inserted and c:server_version() >= 150000 and alone(c, 3) and pinned(c, inserted) or nil
  for i, t in ipairs(tables) do
    local n = stats and stats[key(t.schema, t.name)]
    if fits(t, n) then got[i] = n else recount[#recount + 1] = i end
  end
  count_all(c, tables, recount, kinds, got, why)
  local problems = {}
  for i, t in ipairs(tables) do
    if not fits(t, got[i]) then
      problems[#problems + 1] = { schema = t.schema, name = t.name, got = got[i], want = t.rows,
        member = member[key(t.schema, t.name)] or false, why = why[i] }
    end
  end
  return problems, #tables, { stats = #tables - #recount, counted = #recount }
end

-- "schema.table has N rows, expected M" (or "at least M"), or "schema.table
-- is a view, not counted (expected M rows)".
function rowcheck.describe(p, expected)
  local name = string.format("%s.%s", p.schema, (p.name:gsub("[\r\n]", " ")))
  if p.got == nil then
    return string.format("%s %s (%s %d rows)", name, p.why or "no such table", expected or "expected", p.want)
  end
  return string.format("%s has %d rows, %s %s%d", name, p.got, expected or "expected",
    p.member and "(an extension's configuration table) at least " or "", p.want)
end

return rowcheck
