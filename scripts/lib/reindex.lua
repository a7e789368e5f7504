-- The fix of collation-fix: what the check found (lib.collation's report)
-- made right. Every index at risk rebuilt (REINDEX, one at a time, outside
-- any transaction), then the versions refreshed, those of a collation only
-- when every index on it rebuilt; a unique index that no longer rebuilds
-- reported with its duplicate keys, listed with the table owner's rights.
--
-- Privileges: ownership of the tables whose indexes it rebuilds, of the
-- database (ALTER DATABASE ... REFRESH COLLATION VERSION) and of each
-- collation it refreshes; a superuser has all of them.
local pg = require "pgvault.pg"
local pgvault = require "pgvault"
local proc = require "pgvault.proc"
local collation = require "lib.collation"
local json = require "lib.json"

local reindex = {}

-- How long listing the duplicate keys of one index may take.
reindex.DUPLICATE_KEYS_TIMEOUT = "120s"

-- The query that groups the rows of ix's table by its keys (the index's
-- expressions and predicate, written out by the server for our search
-- path, so every name is qualified).
local function duplicate_keys_sql(conn, ix, limit)
  local exprs = {}
  for k = 1, ix.nkeys do
    exprs[#exprs + 1] = conn:query("SELECT pg_get_indexdef($1::oid, $2, true) AS e", ix.oid, k)[1].e
  end
  local where = {}
  local pred = conn:query("SELECT pg_get_expr(indpred, indrelid) AS p FROM pg_index WHERE indexrelid = $1",
    ix.oid)[1].p
  if pred ~= pg.null then where[#where + 1] = "(" .. pred .. ")" end
  if not ix.nulls_not_distinct then
    for _, e in ipairs(exprs) do where[#where + 1] = "(" .. e .. ") IS NOT NULL" end
  end
  local list = table.concat(exprs, ", ")
  return string.format("SELECT ROW(%s)::text, count(*) FROM %s%s GROUP BY %s HAVING count(*) > 1 "
    .. "ORDER BY 2 DESC, 1 LIMIT %d", list, ix.table, #where > 0 and (" WHERE " .. table.concat(where, " AND ")) or "",
    list, limit)
end

-- Runs `sql` with the rights of `owner` and nothing more: inside a SECURITY
-- DEFINER function owned by that role (where neither SET ROLE nor SET
-- SESSION AUTHORIZATION can return to this session's rights, as they could
-- after a plain SET ROLE), in a transaction that is rolled back whatever
-- the code did, under a statement timeout.
local function query_as_owner(conn, owner, sql)
  local tag = "$pgvault_keys$"
  if sql:find(tag, 1, true) then error(pgvault.error("internal", "the index's text holds " .. tag), 0) end
  conn:exec("BEGIN")
  local ok, rows = pcall(function()
    conn:exec("SET LOCAL statement_timeout = '" .. reindex.DUPLICATE_KEYS_TIMEOUT .. "'")
    conn:exec("CREATE FUNCTION pg_temp.pgvault_duplicate_keys() RETURNS TABLE (key text, n bigint) LANGUAGE sql "
      .. "STABLE SECURITY DEFINER SET search_path = " .. collation.SEARCH_PATH .. " AS " .. tag .. sql .. tag)
    conn:exec("ALTER FUNCTION pg_temp.pgvault_duplicate_keys() OWNER TO " .. pg.quote_ident(owner))
    return conn:query("SELECT key, n FROM pg_temp.pgvault_duplicate_keys()")
  end)
  local rok, rerr = pcall(conn.exec, conn, "ROLLBACK")
  if not ok then error(rows, 0) end
  if not rok then error(rerr, 0) end
  return rows
end

-- Rows whose keys collide in a unique index that failed to rebuild:
-- grouped under the current collation rules, at most `limit` groups.
-- Grouping evaluates the index's expressions and predicate, code that the
-- table's owner chose: it runs with that owner's rights (as REINDEX does),
-- never the invoker's. When that cannot be arranged, or takes longer than
-- DUPLICATE_KEYS_TIMEOUT, returns nil and why (the index is reported
-- without its keys).
function reindex.duplicate_keys(conn, ix, limit)
  local ok, rows = pcall(function()
    return query_as_owner(conn, ix.owner, duplicate_keys_sql(conn, ix, limit or 20))
  end)
  if not ok then
    if not pgvault.is_error(rows) or rows.kind ~= "pg" then error(rows, 0) end
    return nil, tostring(rows)
  end
  local out = json.array()
  for _, r in ipairs(rows) do out[#out + 1] = { key = r.key, rows = r.n } end
  return out
end

-- What this user lacks to fix `report`: one line per object it does not
-- own (REINDEX and the refreshes need ownership, or a superuser).
function reindex.missing_privileges(report)
  local out = {}
  for _, ix in ipairs(report.indexes) do
    if not ix.owned then
      out[#out + 1] = string.format("table %s (owner %s), to rebuild %s", ix.table, ix.owner, ix.qualified)
    end
  end
  if report.database.mismatch and not report.database.owned then
    out[#out + 1] = string.format("database %s (owner %s), to refresh its collation version", report.database.name,
      report.database.owner)
  end
  for _, c in ipairs(report.collations) do
    if not c.owned then
      out[#out + 1] = string.format("collation %s (owner %s), to refresh its version", c.qualified, c.owner)
    end
  end
  return out
end

-- The statements that fix `report`, in order: each index rebuilt, then
-- the versions refreshed (of unused collations, those this user owns).
local function refresh_database_sql(name)
  return "ALTER DATABASE " .. pg.quote_ident(name) .. " REFRESH COLLATION VERSION"
end
local function refresh_collation_sql(qualified)
  return "ALTER COLLATION " .. qualified .. " REFRESH VERSION"
end

function reindex.plan(report)
  local plan = json.array()
  for _, ix in ipairs(report.indexes) do plan[#plan + 1] = "REINDEX INDEX " .. ix.qualified end
  if report.database.mismatch then plan[#plan + 1] = refresh_database_sql(report.database.name) end
  for _, c in ipairs(report.collations) do plan[#plan + 1] = refresh_collation_sql(c.qualified) end
  for _, c in ipairs(report.unused_collations) do
    if c.owned then plan[#plan + 1] = refresh_collation_sql(c.qualified) end
  end
  return plan
end

-- Rebuilds the indexes of `report` one by one (each REINDEX commits on
-- its own, outside any transaction), then refreshes the version of the
-- database and of each collation whose dependent indexes all rebuilt.
-- Returns { rebuilt = {...}, failed = {...}, refreshed = {...}, not_refreshed = {...} }.
function reindex.fix(conn, report)
  local result = { rebuilt = json.array(), failed = json.array(), refreshed = json.array(),
    not_refreshed = json.array() }
  local failed_default, failed_coll = nil, {}
  for _, ix in ipairs(report.indexes) do
    local t0 = proc.now()
    local ok, err = pcall(conn.exec, conn, "REINDEX INDEX " .. ix.qualified)
    if ok then
      result.rebuilt[#result.rebuilt + 1] = { index = ix.qualified, table = ix.table, seconds = proc.now() - t0 }
    else
      if not pgvault.is_error(err) or err.kind ~= "pg" then error(err, 0) end
      local f = { index = ix.qualified, table = ix.table, error = err.message, sqlstate = err.sqlstate,
        detail = err.detail }
      if err.sqlstate == "23505" then
        f.reason = "duplicate keys"
        f.duplicates, f.duplicates_error = reindex.duplicate_keys(conn, ix)
      elseif err.sqlstate == "42501" then
        f.reason = "permission denied (REINDEX needs ownership of the table)"
      end
      result.failed[#result.failed + 1] = f
      if ix.on_default then failed_default = failed_default or ix.qualified end
      for _, oid in ipairs(ix.collation_oids) do failed_coll[oid] = ix.qualified end
    end
  end

  local function refresh(what, sql, blocked_by)
    if blocked_by then
      result.not_refreshed[#result.not_refreshed + 1] = { object = what,
        reason = "index " .. blocked_by .. " did not rebuild" }
      return
    end
    local ok, err = pcall(conn.exec, conn, sql)
    if ok then
      result.refreshed[#result.refreshed + 1] = { object = what, statement = sql }
    else
      if not pgvault.is_error(err) or err.kind ~= "pg" then error(err, 0) end
      result.not_refreshed[#result.not_refreshed + 1] = { object = what, reason = err.message,
        sqlstate = err.sqlstate }
    end
  end

  if report.database.mismatch then
    refresh("database " .. report.database.name, refresh_database_sql(report.database.name), failed_default)
  end
  for _, c in ipairs(report.collations) do
    refresh("collation " .. c.qualified, refresh_collation_sql(c.qualified), failed_coll[c.oid])
  end
  result.unused_skipped = 0
  for _, c in ipairs(report.unused_collations) do
    if c.owned then
      refresh("collation " .. c.qualified, refresh_collation_sql(c.qualified))
    else
      result.unused_skipped = result.unused_skipped + 1
    end
  end
  return result
end

-- What reindex.fix did, as lines (`user`: who ran it).
function reindex.describe(result, user)
  local lines = {}
  local function add(fmt, ...) lines[#lines + 1] = string.format(fmt, ...) end
  for _, r in ipairs(result.rebuilt) do add("rebuilt %s on %s (%.1fs)", r.index, r.table, r.seconds) end
  for _, f in ipairs(result.failed) do
    add("FAILED to rebuild %s on %s: %s", f.index, f.table, f.error)
    if f.duplicates and #f.duplicates > 0 then
      add("  keys that are now equal (key: rows), resolve them and run collation-fix again:")
      for _, d in ipairs(f.duplicates) do add("    %s: %d rows", d.key, d.rows) end
    elseif f.duplicates_error then
      add("  (could not list the duplicate keys: %s)", f.duplicates_error)
    end
  end
  for _, r in ipairs(result.refreshed) do add("refreshed %s", r.object) end
  for _, r in ipairs(result.not_refreshed) do add("NOT refreshed %s: %s", r.object, r.reason) end
  if result.unused_skipped > 0 then
    add("left %d unused collation%s with a stale version alone (not owned by %s; harmless)", result.unused_skipped,
      result.unused_skipped == 1 and "" or "s", user)
  end
  return lines
end

return reindex
