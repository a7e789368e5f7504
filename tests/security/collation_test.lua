-- covers: scripts/collation_check.lua scripts/collation_fix.lua scripts/lib/collation.lua scripts/lib/reindex.lua
-- collation-check and collation-fix run by a superuser must not run other
-- roles' code with the superuser's rights (issue 11). The attacker is a
-- role that owns a database (so it has CREATE on its public schema and may
-- set the database's search_path) and plants functions that make it a
-- superuser when they run with enough rights.
local t = require "harness.testing"
local h = require "harness.env"
local pg = require "pgvault.pg"

local PG = h.pg()
local ATTACKER = "coll_attacker"

local function admin(db, sql)
  return h.psql(PG.admin_url(db), sql)
end

local function is_superuser()
  return admin("postgres", "SELECT rolsuper FROM pg_roles WHERE rolname = '" .. ATTACKER .. "';") == "t\n"
end

-- A function that tries to make the attacker a superuser each time it runs
-- (quietly: the attacker's own CREATE INDEX runs it too), from the rights
-- it runs with and from the session's, got back by RESET ROLE or RESET
-- SESSION AUTHORIZATION; each time both inside the transaction (undone by
-- a rollback) and outside it, through a program the server starts (not).
local PLANT = [[
CREATE FUNCTION public.try_escalate() RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
  IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = 'coll_attacker') THEN RETURN; END IF;
  BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''psql -X -q -h ' || current_setting('unix_socket_directories')
    || ' -p ' || current_setting('port') || ' -U postgres -d postgres -c "ALTER ROLE coll_attacker SUPERUSER"''';
  EXCEPTION WHEN others THEN NULL; END;
  BEGIN EXECUTE 'ALTER ROLE coll_attacker SUPERUSER'; EXCEPTION WHEN others THEN NULL; END;
END $f$;
CREATE FUNCTION public.escalate() RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
  PERFORM public.try_escalate();
  BEGIN RESET ROLE; PERFORM public.try_escalate(); EXCEPTION WHEN others THEN NULL; END;
  BEGIN RESET SESSION AUTHORIZATION; PERFORM public.try_escalate(); EXCEPTION WHEN others THEN NULL; END;
END $f$;
CREATE FUNCTION public.lower_planted(s text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $f$
BEGIN PERFORM public.escalate(); RETURN s; END $f$;
]]

local function fresh(name)
  admin("postgres", string.format([[
    DROP DATABASE IF EXISTS %s WITH (FORCE);
    DROP ROLE IF EXISTS %s;
    CREATE ROLE %s LOGIN;
    CREATE DATABASE %s OWNER %s TEMPLATE template0 ENCODING 'UTF8' LOCALE 'en_US.UTF-8';]],
    name, ATTACKER, ATTACKER, name, ATTACKER))
end

local function cleanup(name)
  admin("postgres", "DROP DATABASE IF EXISTS " .. name .. " WITH (FORCE); DROP ROLE IF EXISTS " .. ATTACKER .. ";")
end

t.test("collation-fix: the duplicate keys of a failed unique index are not listed with the invoker's rights",
  function()
  local name = "sec_coll_dup"
  fresh(name)
  local ok, err = pcall(function()
    -- As the attacker: a unique index on its planted function over an ICU
    -- column, and rows that become equal once the collation compares
    -- case-insensitively (what a library upgrade can do).
    admin(name, "SET ROLE " .. ATTACKER .. ";\n" .. PLANT .. [[
      CREATE COLLATION ctest (provider = icu, locale = 'en');
      CREATE TABLE t (id int PRIMARY KEY, k text COLLATE ctest);
      INSERT INTO t VALUES (1, 'a'), (2, 'A'), (3, 'b');
      CREATE UNIQUE INDEX t_k ON t (public.lower_planted(k));]])
    t.eq(is_superuser(), false, "the planted function does nothing with the attacker's rights")
    admin(name, "UPDATE pg_collation SET colliculocale = 'und-u-ks-level2', collisdeterministic = false, "
      .. "collversion = '0.1' WHERE collname = 'ctest';")
    local r = h.pgvault({ "collation-fix", "--db", PG.admin_url(name), "--no-backup" })
    t.eq(r.code, 1, r.stdout .. r.stderr)
    t.match(r.stdout, "FAILED to rebuild public%.t_k on public%.t: could not create unique index")
    t.eq(is_superuser(), false, "the attacker stays an ordinary role")
    -- Evaluated as the owner, the keys are still listed.
    t.match(r.stdout, "keys that are now equal %(key: rows%)[^\n]*\n    %(a%): 2 rows\n")
  end)
  cleanup(name)
  if not ok then error(err, 0) end
end)

t.test("collation-check and -fix ignore a search_path that puts the database's own functions first", function()
  local name = "sec_coll_path"
  fresh(name)
  local ok, err = pcall(function()
    -- quote_ident, pg_get_userbyid, pg_has_role and count, shadowed in the
    -- schema the attacker controls, first on the database's search_path.
    admin(name, "SET ROLE " .. ATTACKER .. ";\n" .. PLANT .. [[
      CREATE FUNCTION public.quote_ident(text) RETURNS text LANGUAGE plpgsql AS
        $f$ BEGIN PERFORM public.escalate(); RETURN pg_catalog.quote_ident($1); END $f$;
      CREATE FUNCTION public.pg_get_userbyid(oid) RETURNS name LANGUAGE plpgsql AS
        $f$ BEGIN PERFORM public.escalate(); RETURN pg_catalog.pg_get_userbyid($1); END $f$;
      CREATE FUNCTION public.pg_has_role(oid, text) RETURNS boolean LANGUAGE plpgsql AS
        $f$ BEGIN PERFORM public.escalate(); RETURN pg_catalog.pg_has_role($1, $2); END $f$;
      CREATE TABLE w (s text);
      CREATE INDEX w_s ON w (s);
      ALTER DATABASE ]] .. name .. [[ SET search_path = public, pg_catalog;]])
    admin("postgres", "UPDATE pg_database SET datcollversion = '0.1' WHERE datname = '" .. name .. "';")
    local c <close> = pg.connect(PG.admin_url(name), { log_notices = false })
    t.eq(c:query("SELECT current_setting('search_path') AS p")[1].p, "public, pg_catalog", "the trap is set")
    local r = h.pgvault({ "collation-check", "--db", PG.admin_url(name), "--deep", "--create-amcheck" })
    t.eq(r.code, 1, r.stdout .. r.stderr)
    t.match(r.stdout, "public%.w_s on public%.w")
    t.eq(is_superuser(), false, "collation-check ran none of the attacker's functions")
    r = h.pgvault({ "collation-fix", "--db", PG.admin_url(name), "--no-backup" })
    t.eq(r.code, 0, r.stdout .. r.stderr)
    t.match(r.stdout, "rebuilt public%.w_s")
    t.eq(is_superuser(), false, "collation-fix ran none of the attacker's functions")
  end)
  cleanup(name)
  if not ok then error(err, 0) end
end)
