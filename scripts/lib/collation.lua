-- Collation version checks shared by collation-check and collation-fix:
-- which databases and collations have a recorded version that differs
-- from what the operating system's library provides now, the indexes that
-- depend on them, amcheck on those indexes, the server's warning about it,
-- and the report (lines, JSON). The fix itself is lib.reindex.
--
-- Privileges: the check needs only a normal connection. --deep needs the
-- amcheck extension (CREATE EXTENSION is for superusers) and EXECUTE on
-- bt_index_check.
local dump = require "pgvault.dump"
local pg = require "pgvault.pg"
local pgvault = require "pgvault"
local database = require "lib.database"
local json = require "lib.json"

local M = {}

local DEFAULT_COLLATION = 100 -- the "default" collation's fixed OID

-- The search path every query of ours runs with (lib.database's): the
-- database's own setting (ALTER DATABASE ... SET search_path = public,
-- pg_catalog) could put its owner's functions ahead of the built-in ones we
-- call, and run them with our rights.
M.SEARCH_PATH = database.SEARCH_PATH

-- A connection whose notices are kept for the report rather than logged
-- (the report shows the collation WARNING of start-up itself), with a
-- search path of built-in objects only.
function M.connect(url)
  return database.connect(url, { log_notices = false })
end

-- Connection string for another database on the same server, keeping
-- every other setting of `url` (host, user, password, sslmode ...).
local function url_for(url, dbname)
  return (dump.conninfo(url, { dbname = dbname, password = true }))
end
M.url_for = url_for

local function is_null(v)
  return v == nil or v == pg.null
end

local function mismatch(recorded, actual)
  return not is_null(recorded) and not is_null(actual) and recorded ~= actual
end

local function str(v)
  if is_null(v) then return nil end
  return v
end

local DATABASES_SQL = [[
    SELECT d.datname, d.datlocprovider AS provider, d.datcollate, d.daticulocale, d.datallowconn,
           d.datcollversion AS recorded, pg_database_collation_actual_version(d.oid) AS actual,
           d.datname = current_database() AS current, pg_get_userbyid(d.datdba) AS owner,
           pg_has_role(d.datdba, 'USAGE') AS owned
      FROM pg_database d
     ORDER BY d.datname]]

-- Every database's recorded and current default collation version. The
-- version function looks the database up in the latest catalog, not in the
-- query's snapshot, so a database dropped meanwhile by someone else fails
-- the query (42704); the list is then read again.
function M.databases(conn)
  local rows
  for attempt = 1, 5 do
    local ok, res = pcall(conn.query, conn, DATABASES_SQL)
    if ok then
      rows = res
      break
    end
    if type(res) ~= "table" or res.sqlstate ~= "42704" or attempt == 5 then error(res, 0) end
  end
  local out = {}
  for _, r in ipairs(rows) do
    out[#out + 1] = {
      name = r.datname,
      provider = r.provider == "i" and "icu" or "libc",
      locale = r.provider == "i" and str(r.daticulocale) or r.datcollate,
      recorded = str(r.recorded),
      actual = str(r.actual),
      mismatch = mismatch(r.recorded, r.actual),
      allow_connections = r.datallowconn,
      current = r.current,
      owner = r.owner,
      owned = r.owned,
    }
  end
  return out
end

-- Collations of the current database whose recorded version differs, with
-- how many objects depend on them.
function M.collations(conn)
  local rows = conn:query([[
    SELECT c.oid, n.nspname, c.collname, c.collprovider,
           coalesce(c.colliculocale, c.collcollate) AS locale, c.collversion AS recorded,
           pg_collation_actual_version(c.oid) AS actual, pg_get_userbyid(c.collowner) AS owner,
           pg_has_role(c.collowner, 'USAGE') AS owned,
           quote_ident(n.nspname) || '.' || quote_ident(c.collname) AS qualified,
           (SELECT count(*) FROM pg_depend d
             WHERE d.refclassid = 'pg_collation'::regclass AND d.refobjid = c.oid) AS dependents
      FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace
     WHERE c.collversion IS NOT NULL AND c.oid <> $1
       AND c.collversion IS DISTINCT FROM pg_collation_actual_version(c.oid)
     ORDER BY n.nspname, c.collname]], DEFAULT_COLLATION)
  local out = {}
  for _, r in ipairs(rows) do
    if mismatch(r.recorded, r.actual) then
      out[#out + 1] = {
        oid = r.oid, schema = r.nspname, name = r.collname,
        qualified = r.qualified,
        provider = ({ i = "icu", c = "libc", d = "default" })[r.collprovider] or r.collprovider,
        locale = str(r.locale), recorded = r.recorded, actual = r.actual, owner = r.owner, owned = r.owned,
        dependents = r.dependents,
      }
    end
  end
  return out
end

-- Indexes of the current database that depend on a collation in `oids`
-- (non-default collations are in pg_depend) or, when `default` is set, on
-- the database's default collation (not in pg_depend: key columns from
-- pg_index.indcollation, expressions and predicates from their node trees).
-- With `all_versioned`, every index on any versioned collation instead:
-- what --deep examines.
function M.indexes(conn, oids, default, all_versioned)
  local list = {}
  for _, oid in ipairs(oids) do list[#list + 1] = tostring(oid) end
  local rows = conn:query([[
    WITH coll AS (
      SELECT oid FROM pg_collation
       WHERE ($3 AND collversion IS NOT NULL) OR oid = ANY ($1::oid[])
    ), via_depend AS (
      SELECT d.objid AS idx, array_agg(DISTINCT d.refobjid) AS colls
        FROM pg_depend d JOIN coll ON coll.oid = d.refobjid
       WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_collation'::regclass
       GROUP BY d.objid
    ), via_default AS (
      SELECT x.indexrelid AS idx
        FROM pg_index x
       WHERE ($2 OR $3) AND ($4 = ANY (x.indcollation::oid[])
          OR coalesce(x.indexprs::text, '') ~ 'collid 100\M'
          OR coalesce(x.indpred::text, '') ~ 'collid 100\M')
    )
    SELECT i.oid, n.nspname AS schema, i.relname AS name,
           quote_ident(n.nspname) || '.' || quote_ident(i.relname) AS qualified,
           quote_ident(tn.nspname) || '.' || quote_ident(t.relname) AS table_name,
           am.amname AS method, x.indisunique AS is_unique,
           x.indisprimary AS is_primary, x.indnullsnotdistinct AS nulls_not_distinct,
           x.indnkeyatts AS nkeys, pg_relation_size(i.oid) AS bytes,
           pg_get_userbyid(t.relowner) AS owner, pg_has_role(t.relowner, 'USAGE') AS owned,
           vd.idx IS NOT NULL AS on_default,
           coalesce((SELECT string_agg(quote_ident(cn.nspname) || '.' || quote_ident(c.collname), ', '
                                       ORDER BY c.collname)
                       FROM pg_collation c JOIN pg_namespace cn ON cn.oid = c.collnamespace
                      WHERE c.oid = ANY (dep.colls)), '') AS collations,
           pg_get_expr(x.indpred, x.indrelid) AS predicate
      FROM pg_class i
      JOIN pg_index x ON x.indexrelid = i.oid
      JOIN pg_class t ON t.oid = x.indrelid
      JOIN pg_namespace n ON n.oid = i.relnamespace
      JOIN pg_namespace tn ON tn.oid = t.relnamespace
      JOIN pg_am am ON am.oid = i.relam
      LEFT JOIN via_depend dep ON dep.idx = i.oid
      LEFT JOIN via_default vd ON vd.idx = i.oid
     WHERE i.relkind = 'i' AND i.relpersistence <> 't'
       AND (dep.idx IS NOT NULL OR vd.idx IS NOT NULL)
     ORDER BY n.nspname, i.relname]], "{" .. table.concat(list, ",") .. "}", default and true or false,
    all_versioned and true or false, DEFAULT_COLLATION)
  local out = {}
  for _, r in ipairs(rows) do
    local colls = {}
    if r.on_default then colls[#colls + 1] = "default" end
    for c in r.collations:gmatch("[^,%s]+") do colls[#colls + 1] = c end
    out[#out + 1] = {
      oid = r.oid, schema = r.schema, name = r.name,
      qualified = r.qualified, table = r.table_name,
      method = r.method, unique = r.is_unique, primary = r.is_primary,
      nulls_not_distinct = r.nulls_not_distinct, nkeys = r.nkeys, bytes = r.bytes,
      on_default = r.on_default, collations = colls, collation_oids = {},
      predicate = str(r.predicate), owner = r.owner, owned = r.owned,
    }
  end
  return out
end

-- The server's warning that a collation's version changed, for the
-- database's default collation ('database "app" has a collation version
-- mismatch') or one collation ('collation "x" has version mismatch'). `w`
-- is a connection's notice (c:notices()) or a client program's warning
-- (the text of a pgvault.dump stage's report.warnings).
function M.is_mismatch(w)
  local text = type(w) == "table" and (w.message or w.text) or w
  if type(text) ~= "string" then return false end
  return text:find("^database \".*\" has a collation version mismatch") ~= nil
    or text:find("^collation \".*\" has version mismatch") ~= nil
end

-- What to do about it, said instead of the server's hint (which suggests
-- only refreshing the version: that silences the warning and leaves the
-- indexes wrong).
M.ADVICE = "Run 'pgvault collation-check --db URL' to list the indexes at risk, then 'pgvault collation-fix "
  .. "--db URL' to rebuild them and refresh the version."

-- A warning's text without the server's hint.
local function without_hint(w)
  local text = type(w) == "table" and (w.text or w.message) or tostring(w)
  local at = text:find(" Hint: ", 1, true)
  return at and text:sub(1, at - 1) or text
end

-- Logs the warnings several connections to one database received (each
-- one once: every connection gets the start-up warning), a collation
-- version mismatch with what to do about it. Each argument is a list of
-- notices or client warnings (nil is an empty one). Returns true when a
-- collation version mismatch was among them.
function M.log_warnings(...)
  local seen, found = {}, false
  for i = 1, select("#", ...) do
    for _, w in ipairs(select(i, ...) or {}) do
      local key = without_hint(w)
      if not seen[key] then
        seen[key] = true
        local severity = type(w) == "table" and w.severity or "WARNING"
        if M.is_mismatch(w) then
          found = true
          log.warn("%s %s", key, M.ADVICE)
        elseif severity == "WARNING" then
          log.warn("%s", type(w) == "table" and (w.text or w.message) or w)
        else
          log.info("%s", type(w) == "table" and (w.text or w.message) or w)
        end
      end
    end
  end
  return found
end

-- The start-up notices that report a collation mismatch.
local function startup_warnings(conn)
  local out = {}
  for _, n in ipairs(conn:notices()) do
    if M.is_mismatch(n) then
      out[#out + 1] = { severity = n.severity, sqlstate = n.sqlstate, message = n.message, detail = n.detail }
    end
  end
  return out
end

-- Which collation OIDs each index depends on (to decide per collation
-- whether its version may be refreshed).
local function index_collation_oids(conn, indexes)
  if #indexes == 0 then return end
  local by_oid = {}
  local oids = {}
  for _, ix in ipairs(indexes) do
    by_oid[ix.oid] = ix
    oids[#oids + 1] = tostring(ix.oid)
  end
  local rows = conn:query([[
    SELECT objid, refobjid FROM pg_depend
     WHERE classid = 'pg_class'::regclass AND refclassid = 'pg_collation'::regclass
       AND objid = ANY ($1::oid[])]], "{" .. table.concat(oids, ",") .. "}")
  for _, r in ipairs(rows) do
    local ix = by_oid[r.objid]
    ix.collation_oids[#ix.collation_oids + 1] = r.refobjid
  end
end

-- Makes sure amcheck is there. collation-check is read-only: it creates
-- the extension only when asked (create = true), in schema public, and
-- otherwise says what is missing.
local function ensure_amcheck(conn, create)
  if conn:query("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'")[1] then return end
  local dbname = conn:db()
  if not create then
    pgvault.raise("pg", string.format("--deep needs the amcheck extension, which database %s does not have: run "
      .. "again with --create-amcheck (it creates it; a superuser may), or have a superuser run CREATE EXTENSION "
      .. "amcheck there, or run without --deep", dbname))
  end
  local ok, err = pcall(conn.exec, conn, "CREATE EXTENSION amcheck SCHEMA public")
  if not ok then
    if not pgvault.is_error(err) or err.kind ~= "pg" then error(err, 0) end
    pgvault.raise("pg", string.format("--create-amcheck: this user may not create the amcheck extension in database "
      .. "%s (%s); ask a superuser to run CREATE EXTENSION amcheck there and GRANT EXECUTE ON FUNCTION "
      .. "bt_index_check(regclass, boolean) to this user, or run without --deep", dbname, tostring(err)),
      { sqlstate = err.sqlstate })
  end
  log.info("created the amcheck extension in schema public of database %s (--create-amcheck)", dbname)
end

-- amcheck's bt_index_check on each B-tree index. Returns a summary, or
-- raises a clear error when amcheck is not available to this user.
function M.deep_check(conn, indexes, create_amcheck)
  local dbname = conn:db()
  ensure_amcheck(conn, create_amcheck)
  local schema = conn:query([[SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                               WHERE e.extname = 'amcheck']])[1].nspname
  local fn = pg.quote_ident(schema) .. ".bt_index_check"
  local summary = { checked = 0, corrupt = 0, skipped = 0, errors = 0 }
  for _, ix in ipairs(indexes) do
    if ix.method ~= "btree" then
      ix.deep = { status = "skipped", reason = "amcheck checks B-tree indexes only" }
      summary.skipped = summary.skipped + 1
    else
      local cok, cerr = pcall(conn.query, conn, "SELECT " .. fn .. "($1::oid::regclass, false)", ix.oid)
      summary.checked = summary.checked + 1
      if cok then
        ix.deep = { status = "ok" }
      elseif pgvault.is_error(cerr) and cerr.sqlstate == "42501" then
        pgvault.raise("pg", string.format("--deep: this user may not run %s in database %s (%s); ask a superuser "
          .. "to GRANT EXECUTE ON FUNCTION %s(regclass, boolean) to it, or run without --deep", fn, dbname,
          tostring(cerr), fn), { sqlstate = "42501" })
      elseif pgvault.is_error(cerr) and cerr.kind == "pg" then
        -- XX001 data_corrupted, XX002 index_corrupted: what amcheck reports.
        local corrupt = cerr.sqlstate == "XX001" or cerr.sqlstate == "XX002"
        ix.deep = { status = corrupt and "corrupt" or "error", error = cerr.message, sqlstate = cerr.sqlstate,
          detail = cerr.detail }
        if corrupt then
          summary.corrupt = summary.corrupt + 1
        else
          summary.errors = summary.errors + 1
        end
      else
        error(cerr, 0)
      end
    end
  end
  return summary
end

-- Everything about the database `conn` is connected to. opts.deep runs
-- amcheck on every index that uses a versioned collation (opts.create_amcheck:
-- creating the extension when it is missing).
function M.check(conn, opts)
  opts = opts or {}
  if conn:server_version() < 150000 then
    pgvault.raise("pg", string.format("database %s runs PostgreSQL %d: collation-check needs PostgreSQL 15 or later "
      .. "(the first to record database collation versions)", conn:db(), conn:server_version() // 10000))
  end
  local report = { startup_warnings = startup_warnings(conn) }
  local current
  report.other_databases = {}
  for _, d in ipairs(M.databases(conn)) do
    if d.current then
      current = d
    elseif d.mismatch then
      report.other_databases[#report.other_databases + 1] = d
    end
  end
  report.database = current
  report.user = conn:info().user
  -- Collations nothing uses are harmless (the server only warns about a
  -- collation when it is used); after an ICU upgrade there can be hundreds.
  report.collations, report.unused_collations = {}, {}
  for _, c in ipairs(M.collations(conn)) do
    local list = c.dependents > 0 and report.collations or report.unused_collations
    list[#list + 1] = c
  end
  local oids = {}
  for _, c in ipairs(report.collations) do oids[#oids + 1] = c.oid end
  report.indexes = M.indexes(conn, oids, current.mismatch)
  index_collation_oids(conn, report.indexes)
  if opts.deep then
    report.deep_indexes = M.indexes(conn, {}, false, true)
    report.deep = M.deep_check(conn, report.deep_indexes, opts.create_amcheck)
  end
  report.needs_fix = current.mismatch or #report.collations > 0
  report.corrupt = report.deep and (report.deep.corrupt > 0 or report.deep.errors > 0) or false
  return report
end

-- The databases to work on: the one `url` names, or with `all` every
-- database of that server that accepts connections. Each target is
-- {name, url, conn}; conn is open for the first one (its start-up
-- notices intact) and nil for the others (connect when their turn comes).
function M.targets(url, all)
  local conn = M.connect(url)
  if not all then return { { name = conn:db(), url = url, conn = conn } } end
  local out = {}
  for _, d in ipairs(M.databases(conn)) do
    if d.allow_connections then
      local t = { name = d.name, url = url_for(url, d.name) }
      if d.current then
        t.url, t.conn = url, conn
        table.insert(out, 1, t)
      else
        out[#out + 1] = t
      end
    end
  end
  return out
end

-- Human-readable report of one database's check, as lines.
local function kib(bytes)
  return string.format("%d kB", (bytes + 1023) // 1024)
end

function M.describe(report)
  local lines = {}
  local function add(fmt, ...) lines[#lines + 1] = string.format(fmt, ...) end
  local d = report.database
  local where = string.format("%s %s", d.provider, d.locale or "")
  if d.mismatch then
    add("database %s (%s): collation version mismatch: recorded %s, the operating system provides %s",
      d.name, where, d.recorded, d.actual)
  else
    add("database %s (%s): default collation version %s matches", d.name, where, d.actual or "(none: not versioned)")
  end
  for _, w in ipairs(report.startup_warnings) do
    add("  the server warned at connection: %s", w.message)
  end
  for _, c in ipairs(report.collations) do
    add("collation %s (%s %s): version mismatch: recorded %s, the operating system provides %s (%d dependent objects)",
      c.qualified, c.provider, c.locale or "", c.recorded, c.actual, c.dependents)
  end
  if #report.indexes > 0 then
    add("%d index%s depend%s on %s and must be rebuilt:", #report.indexes, #report.indexes == 1 and "" or "es",
      #report.indexes == 1 and "s" or "", (#report.collations > 0 or not d.mismatch) and "them" or "it")
    for _, ix in ipairs(report.indexes) do
      add("  %s on %s (%s%s, collation %s, %s)", ix.qualified, ix.table, ix.method, ix.unique and " unique" or "",
        table.concat(ix.collations, ", "), kib(ix.bytes))
    end
  elseif report.needs_fix then
    add("no index depends on them: only the recorded version needs refreshing")
  end
  if #report.unused_collations > 0 then
    add("%d collation%s nothing uses also ha%s a stale version (harmless; refreshed by collation-fix when this user "
      .. "owns them)", #report.unused_collations, #report.unused_collations == 1 and "" or "s",
      #report.unused_collations == 1 and "s" or "ve")
  end
  if report.deep then
    add("deep check (amcheck bt_index_check) of %d B-tree index%s on versioned collations: %d corrupt, "
      .. "%d could not be checked", report.deep.checked, report.deep.checked == 1 and "" or "es", report.deep.corrupt,
      report.deep.errors)
    for _, ix in ipairs(report.deep_indexes) do
      if ix.deep.status == "corrupt" or ix.deep.status == "error" then
        add("  %s %s on %s: %s", ix.deep.status == "corrupt" and "CORRUPT" or "NOT CHECKED", ix.qualified, ix.table,
          ix.deep.error)
      end
    end
  end
  for _, o in ipairs(report.other_databases) do
    add("database %s on the same server also has a mismatch: recorded %s, the operating system provides %s",
      o.name, o.recorded, o.actual)
  end
  return lines
end

-- The report as plain data for JSON (no internal fields; lists are
-- arrays, empty or not).
function M.plain(report)
  local function index_view(ix)
    return { name = ix.qualified, table = ix.table, method = ix.method, unique = ix.unique, primary = ix.primary,
      collations = json.array(ix.collations), bytes = ix.bytes, deep = ix.deep }
  end
  local out = {
    database = report.database, startup_warnings = json.array(report.startup_warnings), collations = json.array(),
    indexes = json.array(), other_databases = json.array(), unused_collations = json.array(),
    needs_fix = report.needs_fix, corrupt = report.corrupt,
  }
  for _, c in ipairs(report.collations) do
    out.collations[#out.collations + 1] = { name = c.qualified, provider = c.provider, locale = c.locale,
      recorded = c.recorded, actual = c.actual, dependents = c.dependents, owner = c.owner }
  end
  for _, c in ipairs(report.unused_collations) do
    out.unused_collations[#out.unused_collations + 1] = { name = c.qualified, provider = c.provider,
      locale = c.locale, recorded = c.recorded, actual = c.actual, owner = c.owner }
  end
  for _, ix in ipairs(report.indexes) do out.indexes[#out.indexes + 1] = index_view(ix) end
  for _, o in ipairs(report.other_databases) do
    out.other_databases[#out.other_databases + 1] = { name = o.name, recorded = o.recorded, actual = o.actual }
  end
  if report.deep then
    out.deep = { checked = report.deep.checked, corrupt = report.deep.corrupt, skipped = report.deep.skipped,
      errors = report.deep.errors, indexes = json.array() }
    for _, ix in ipairs(report.deep_indexes) do out.deep.indexes[#out.deep.indexes + 1] = index_view(ix) end
  end
  return out
end

return M
