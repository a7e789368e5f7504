-- Databases as a whole, over a connection to the server's maintenance
-- database: their properties (what pg_dump without --create leaves out of
-- the archive: owner, encoding, locale, ACL, settings, comment, limits,
-- security labels), creating one like another, dropping, renaming, ending
-- sessions, and a lock that keeps two restores of one database apart.
-- Used by restore, the restore drill of verify, and backup (which records
-- the properties in the manifest).
local dump = require "pgvault.dump"
local pg = require "pgvault.pg"
local pgvault = require "pgvault"
local proc = require "pgvault.proc"
local json = require "lib.json"

local database = {}

-- The search path of every connection pgvault opens to run its own
-- queries: a database may carry ALTER DATABASE … SET search_path = public,
-- …, and an object planted in public would then shadow a built-in function
-- and run with the rights of the role running pgvault.
database.SEARCH_PATH = "pg_catalog, pg_temp"

-- pgvault's own sessions run without the timeouts a role or database may
-- set for its applications (statement_timeout = '1s' would cancel a
-- restore's checks half-way), as pg_dump and pg_restore do for theirs;
-- given at connection time, so that not even the first statement runs
-- under them. PGOPTIONS, or the target's own options, come first.
database.SESSION_OPTIONS = "-c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0"

-- `target` (a URL or key=value conninfo) as a conninfo with the session
-- options added: for pgvault's sessions, and for pg_dump's and
-- pg_restore's (whose first statement runs before they clear the
-- timeouts themselves).
function database.with_session_options(target)
  local kv = pg.parse_conninfo(target or "")
  local own = kv.options or os.getenv("PGOPTIONS")
  kv.options = (own and own ~= "" and (own .. " ") or "") .. database.SESSION_OPTIONS
  local parts = {}
  for k, v in pairs(kv) do
    parts[#parts + 1] = k .. "='" .. v:gsub("\\", "\\\\"):gsub("'", "\\'") .. "'"
  end
  table.sort(parts)
  return table.concat(parts, " ")
end

-- pg.connect (same arguments) with the search path pinned and the session
-- options above.
function database.connect(target, opts)
  local c = pg.connect(database.with_session_options(target), opts)
  c:exec("SET search_path = " .. database.SEARCH_PATH)
  return c
end

-- A connection to the server's maintenance database (postgres, else
-- template1) with the credentials of `url`.
function database.admin_connect(url)
  local last
  for _, db in ipairs({ "postgres", "template1" }) do
    local ok, c = pcall(database.connect, (dump.conninfo(url, { dbname = db, password = true })))
    if ok then return c end
    last = c
    if type(c) == "table" and c.sqlstate ~= "3D000" then break end
  end
  error(last, 0)
end

local function q(c, ident) return c:quote_ident(ident) end
local function lit(c, s) return c:quote_literal(s) end

-- The properties as one JSON object, built by the server (column names
-- differ between versions: to_jsonb reads whichever exist).
local PROPERTIES_SQL = [[
SELECT jsonb_strip_nulls(jsonb_build_object(
  'owner', pg_get_userbyid(d.datdba),
  'encoding', pg_encoding_to_char(d.encoding),
  'collate', j->>'datcollate', 'ctype', j->>'datctype',
  'locale_provider', CASE j->>'datlocprovider' WHEN 'i' THEN 'icu' WHEN 'b' THEN 'builtin'
    WHEN 'c' THEN 'libc' END,
  'locale', coalesce(j->>'datlocale', j->>'daticulocale'),
  'icu_rules', j->>'daticurules',
  'tablespace', t.spcname,
  'connection_limit', d.datconnlimit,
  'is_template', d.datistemplate,
  'allow_connections', d.datallowconn,
  'comment', shobj_description(d.oid, 'pg_database'),
  'acl', CASE WHEN d.datacl IS NOT NULL THEN (SELECT coalesce(jsonb_agg(jsonb_build_object(
      'grantee', CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END,
      'privilege', a.privilege_type, 'grantable', a.is_grantable)
      ORDER BY a.grantee, a.privilege_type), '[]'::jsonb) FROM aclexplode(d.datacl) a) END,
  'settings', (SELECT jsonb_agg(jsonb_build_object(
      'role', CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, 'setting', c.setting)
      ORDER BY s.setrole, c.n) FROM pg_db_role_setting s, unnest(s.setconfig) WITH ORDINALITY c(setting, n)
    WHERE s.setdatabase = d.oid),
  'security_labels', (SELECT jsonb_agg(jsonb_build_object('provider', l.provider, 'label', l.label)
      ORDER BY l.provider) FROM pg_shseclabel l
    WHERE l.objoid = d.oid AND l.classoid = 'pg_database'::regclass)
))::text AS p
FROM pg_database d CROSS JOIN LATERAL to_jsonb(d) j JOIN pg_tablespace t ON t.oid = d.dattablespace
WHERE d.datname = ]]

-- The properties of database `name` (nil when it does not exist), in the
-- shape the manifest records them (lib.manifest.FIELDS.properties).
function database.properties(c, name)
  local rows = name and c:query(PROPERTIES_SQL .. "$1", name) or c:query(PROPERTIES_SQL .. "current_database()")
  if #rows == 0 then return nil end
  local p = json.decode(rows[1].p)
  for _, k in ipairs({ "acl", "settings", "security_labels" }) do
    if p[k] then p[k] = json.array(p[k]) end
  end
  return p
end

function database.exists(c, name)
  return #c:query("SELECT 1 FROM pg_database WHERE datname = $1", name) > 0
end

-- `base .. suffix`, or with _2, _3 … appended when that name is taken.
function database.free_name(c, base, suffix)
  local naming = require "lib.naming"
  for n = 1, 100 do
    local name = naming.db_with_suffix(base, suffix .. (n > 1 and ("_" .. n) or ""))
    if not database.exists(c, name) then return name end
  end
  pgvault.raise("exists", "no free database name like " .. naming.db_with_suffix(base, suffix))
end

local function role_exists(c, role)
  return #c:query("SELECT 1 FROM pg_roles WHERE rolname = $1", role) > 0
end

-- The CREATE DATABASE clauses that give the new database `p`'s locale.
local function locale_clauses(c, p)
  local sql = {}
  if p.encoding then sql[#sql + 1] = "ENCODING " .. lit(c, p.encoding) end
  if p.collate then sql[#sql + 1] = "LC_COLLATE " .. lit(c, p.collate) end
  if p.ctype then sql[#sql + 1] = "LC_CTYPE " .. lit(c, p.ctype) end
  if p.locale_provider == "icu" and p.locale then
    sql[#sql + 1] = "LOCALE_PROVIDER icu ICU_LOCALE " .. lit(c, p.locale)
    if p.icu_rules then sql[#sql + 1] = "ICU_RULES " .. lit(c, p.icu_rules) end
  elseif p.locale_provider == "builtin" and p.locale then
    sql[#sql + 1] = "LOCALE_PROVIDER builtin BUILTIN_LOCALE " .. lit(c, p.locale)
  end
  return table.concat(sql, " ")
end

local function create_sql(c, name, p, with_locale)
  local sql = { "CREATE DATABASE", q(c, name), "TEMPLATE template0" }
  if p and p.owner and role_exists(c, p.owner) then sql[#sql + 1] = "OWNER " .. q(c, p.owner) end
  if p and with_locale then sql[#sql + 1] = locale_clauses(c, p) end
  if p and p.tablespace and p.tablespace ~= "pg_default"
    and #c:query("SELECT 1 FROM pg_tablespace WHERE spcname = $1", p.tablespace) > 0 then
    sql[#sql + 1] = "TABLESPACE " .. q(c, p.tablespace)
  end
  return table.concat(sql, " ")
end

-- CREATE DATABASE `name` from template0 with the owner, encoding, locale
-- and tablespace of `p` (when known and present on this server; a locale
-- this server lacks falls back to its default, with a warning). A name
-- that is taken raises kind "exists".
function database.create(c, name, p)
  local ok, err = pcall(c.exec, c, create_sql(c, name, p, true))
  if not ok and type(err) == "table" and err.sqlstate == "22023" and p and p.encoding then
    log.warn("cannot create database %s with the locale of the original (%s): %s; using this server's default",
      name, tostring(p.collate or p.locale), tostring(err.message))
    ok, err = pcall(c.exec, c, create_sql(c, name, p, false))
  end
  if not ok and type(err) == "table" and (err.sqlstate == "42P04" or err.sqlstate == "23505") then
    pgvault.raise("exists", string.format("database %s already exists: is another restore running?", name))
  end
  if not ok then error(err, 0) end
end

-- Drops database `name` if it exists. A plain DROP makes autovacuum
-- workers leave by themselves (WITH (FORCE) would try to terminate them
-- too, which only a superuser may); client sessions still on it are ended
-- (each logged once) and the DROP tried again; WITH (FORCE) is the last try.
function database.drop(c, name, seen)
  local sql = "DROP DATABASE IF EXISTS " .. q(c, name)
  local err
  for _ = 1, 3 do
    local ok, e = pcall(c.exec, c, sql)
    if ok then return end
    err = e
    if type(e) ~= "table" or e.sqlstate ~= "55006" then error(e, 0) end
    database.terminate_sessions(c, name, seen)
  end
  if not pcall(c.exec, c, sql .. " WITH (FORCE)") then error(err, 0) end
end

-- Ends the other sessions on `name`, saying whose, once per session
-- (`seen` remembers the ones already logged across calls).
-- pg_terminate_backend needs superuser, the same role, or pg_signal_backend.
function database.terminate_sessions(c, name, seen)
  seen = seen or {}
  local rows = c:query([[SELECT pid, usename, application_name FROM pg_stat_activity
    WHERE datname = $1 AND pid <> pg_backend_pid()]], name)
  for _, r in ipairs(rows) do
    local ok, e = pcall(c.query, c, "SELECT pg_terminate_backend($1)", r.pid)
    if not seen[r.pid] then
      seen[r.pid] = true
      log.warn("terminating session %d (user %s, %s) on database %s%s", r.pid, tostring(r.usename),
        r.application_name ~= "" and r.application_name or "no application name", name,
        ok and "" or (": " .. tostring(e)))
    end
  end
  return #rows
end

-- Renames, retrying while sessions reconnect (SQLSTATE 55006).
function database.rename(c, from, to, seen)
  for attempt = 1, 50 do
    local ok, e = pcall(c.exec, c, "ALTER DATABASE " .. q(c, from) .. " RENAME TO " .. q(c, to))
    if ok then return end
    if type(e) ~= "table" or e.sqlstate ~= "55006" or attempt == 50 then error(e, 0) end
    database.terminate_sessions(c, from, seen)
    proc.sleep(0.1)
  end
end

-- Sets whether `name` accepts connections.
function database.allow_connections(c, name, allow)
  c:exec("ALTER DATABASE " .. q(c, name) .. " ALLOW_CONNECTIONS " .. (allow and "true" or "false"))
end

-- The key of the advisory lock of restores of database `name`.
local LOCK_KEY = "hashtext('pgvault restore ' || $1)::bigint"

-- The session holding the restore lock of `name`, described ("session
-- 1234 of user u from 10.0.0.5, pgvault, since 2026-11-30 21:40:02+00"),
-- or nil if none is seen (it ended meanwhile, or is not visible to us).
local function lock_holder(c, name)
  local ok, rows = pcall(c.query, c, [[SELECT a.pid, a.usename, coalesce(host(a.client_addr), 'a local socket')
      AS client, a.application_name, to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SSOF') AS since
    FROM pg_locks l JOIN pg_stat_activity a USING (pid)
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND ((l.classid::bigint << 32) | l.objid::bigint) = ]] .. LOCK_KEY, name)
  local r = ok and rows[1]
  if not r then return nil end
  return string.format("session %s of user %s from %s, %s, since %s", tostring(r.pid), tostring(r.usename),
    tostring(r.client), r.application_name ~= "" and r.application_name or "no application name", tostring(r.since))
end

-- Holds a lock for the rest of the connection's life so that one restore
-- of database `name` runs at a time on this server; raises when another
-- holds it, naming the session that does.
function database.lock(c, name)
  local rows = c:query("SELECT pg_try_advisory_lock(" .. LOCK_KEY .. ") AS ok", name)
  if not rows[1].ok then
    local holder = lock_holder(c, name)
    pgvault.raise("exists", string.format("another pgvault restore of database %s is running on this server%s: "
      .. "wait for it to finish", name, holder and (" (" .. holder .. ")") or ""))
  end
end

-- Settings whose value is a list of quoted items (pg_dump's
-- variable_is_guc_list_quote): each item becomes its own literal.
local LIST_QUOTE = { search_path = true, temp_tablespaces = true, session_preload_libraries = true,
  shared_preload_libraries = true, local_preload_libraries = true, unix_socket_directories = true }

-- "name=value" as stored in pg_db_role_setting -> "name TO <literals>".
local function setting_sql(c, setting)
  local name, value = setting:match("^([^=]+)=(.*)$")
  if not name then return nil end
  if not LIST_QUOTE[name:lower()] then return q(c, name) .. " TO " .. lit(c, value) end
  local items, rest = {}, value
  while rest ~= "" do
    local item
    rest = rest:gsub("^%s+", "")
    if rest:sub(1, 1) == '"' then
      local close = 2
      while true do
        close = rest:find('"', close, true)
        if not close then return nil end
        if rest:sub(close + 1, close + 1) ~= '"' then break end
        close = close + 2
      end
      item, rest = rest:sub(2, close - 1):gsub('""', '"'), rest:sub(close + 1)
    else
      item, rest = rest:match("^([^,]*)(.*)$")
      item = item:gsub("%s+$", "")
    end
    items[#items + 1] = lit(c, item)
    rest = rest:gsub("^%s*,?", "")
  end
  return q(c, name) .. " TO " .. (#items > 0 and table.concat(items, ", ") or "''")
end

local PRIVILEGES = { CREATE = true, TEMPORARY = true, CONNECT = true }

-- The statements that give database `name` the properties `p` beyond what
-- CREATE DATABASE sets: ACL, settings (its own and per role), comment,
-- connection limit, security labels, template and connection flags.
local function property_statements(c, name, p)
  local db, out = q(c, name), {}
  local function add(sql, what) out[#out + 1] = { sql = sql, what = what } end
  if p.acl then
    add("REVOKE ALL ON DATABASE " .. db .. " FROM PUBLIC", "its privileges")
    if p.owner then add("REVOKE ALL ON DATABASE " .. db .. " FROM " .. q(c, p.owner), "its privileges") end
    for _, a in ipairs(p.acl) do
      if not PRIVILEGES[a.privilege] then
        pgvault.raise("verify", "unknown database privilege " .. string.format("%q", tostring(a.privilege)))
      end
      add(string.format("GRANT %s ON DATABASE %s TO %s%s", a.privilege, db, a.grantee and q(c, a.grantee) or "PUBLIC",
        a.grantable and " WITH GRANT OPTION" or ""), "the privilege " .. a.privilege .. " of "
        .. (a.grantee or "PUBLIC"))
    end
  end
  for _, s in ipairs(p.settings or {}) do
    local set = setting_sql(c, s.setting)
    if set then
      add((s.role and ("ALTER ROLE " .. q(c, s.role) .. " IN DATABASE " .. db) or ("ALTER DATABASE " .. db))
        .. " SET " .. set, "the setting " .. s.setting .. (s.role and (" of role " .. s.role) or ""))
    end
  end
  if p.comment then add("COMMENT ON DATABASE " .. db .. " IS " .. lit(c, p.comment), "its comment") end
  if p.connection_limit and p.connection_limit ~= -1 then
    add(string.format("ALTER DATABASE %s CONNECTION LIMIT %d", db, p.connection_limit), "its connection limit")
  end
  for _, l in ipairs(p.security_labels or {}) do
    add(string.format("SECURITY LABEL FOR %s ON DATABASE %s IS %s", q(c, l.provider), db, lit(c, l.label)),
      "its security label of " .. l.provider)
  end
  if p.is_template then add("ALTER DATABASE " .. db .. " IS_TEMPLATE true", "its template flag") end
  if p.allow_connections == false then
    add("ALTER DATABASE " .. db .. " ALLOW_CONNECTIONS false", "ALLOW_CONNECTIONS false")
  end
  return out
end

-- Gives database `name` the properties `p` (from database.properties or a
-- manifest). What cannot be carried over (a role this server lacks, a
-- setting only a superuser may make) is a warning each; returns how many
-- properties were not carried over.
function database.apply(c, name, p)
  local missed = 0
  for _, st in ipairs(property_statements(c, name, p or {})) do
    local ok, err = pcall(c.exec, c, st.sql)
    if not ok then
      missed = missed + 1
      log.warn("database %s: cannot carry over %s: %s", name, st.what,
        type(err) == "table" and tostring(err.message) or tostring(err))
    end
  end
  return missed
end

return database
