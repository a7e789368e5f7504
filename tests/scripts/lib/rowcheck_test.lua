-- covers: scripts/lib/rowcheck.lua
-- lib.rowcheck: a restored database's row counts against the archive's,
-- and counting that runs none of the restored database's code with the
-- counting role's rights (issue 11): not a view's functions, not a row
-- security policy's, not a count() planted ahead of pg_catalog's.
local t = require "harness.testing"
local h = require "harness.env"
local pg = require "pgvault.pg"
local rowcheck = require "lib.rowcheck"

local PG = h.pg()
local DB = "rowcheck_lib"
local url = h.createdb(DB)
h.psql(url, [[
  CREATE TABLE ran (what text);
  CREATE FUNCTION spy(what text) RETURNS boolean LANGUAGE plpgsql AS
    $f$ BEGIN INSERT INTO public.ran VALUES (what); RETURN true; END $f$;
  CREATE TABLE a (i int); INSERT INTO a SELECT generate_series(1, 10);
  CREATE TABLE parent (i int); CREATE TABLE child () INHERITS (parent);
  INSERT INTO parent VALUES (1); INSERT INTO child VALUES (2), (3);
  CREATE VIEW looks_like_a_table AS SELECT i FROM a WHERE spy('view');
  CREATE TABLE guarded (i int); INSERT INTO guarded VALUES (1), (2);
  ALTER TABLE guarded ENABLE ROW LEVEL SECURITY; ALTER TABLE guarded FORCE ROW LEVEL SECURITY;
  CREATE POLICY p ON guarded USING (spy('policy'));]])

local function ran()
  return h.psql(PG.admin_url(DB), "SELECT coalesce(string_agg(what, ',' ORDER BY what), '') FROM ran;")
end

t.test("counts match, differ, or are missing; inherited rows are not the parent's", function()
  local c <close> = pg.connect(url)
  local problems, checked = rowcheck.compare(c, {
    { schema = "public", name = "a", rows = 10 },
    { schema = "public", name = "parent", rows = 1 },
    { schema = "public", name = "child", rows = 3 },
    { schema = "public", name = "gone", rows = 4 },
  })
  t.eq(checked, 4)
  t.eq(#problems, 2)
  t.eq(rowcheck.describe(problems[1]), "public.child has 2 rows, expected 3")
  t.eq(rowcheck.describe(problems[2], "the archive"), "public.gone no such table (the archive 4 rows)")
end)

t.test("a view under a table's name is reported, its functions never run", function()
  local c <close> = pg.connect(PG.admin_url(DB))
  local problems = rowcheck.compare(c, { { schema = "public", name = "looks_like_a_table", rows = 10 } })
  t.eq(#problems, 1)
  t.eq(rowcheck.describe(problems[1]), "public.looks_like_a_table is a view, not counted (expected 10 rows)")
  t.eq(ran(), "\n", "the view's function did not run")
end)

t.test("a row security policy is not applied: the table cannot be counted and says why", function()
  -- The owner is subject to the policy (FORCE): counting would run its
  -- function and count only what it lets through.
  local c <close> = pg.connect(url)
  local problems = rowcheck.compare(c, { { schema = "public", name = "guarded", rows = 2 } })
  t.eq(#problems, 1)
  t.match(rowcheck.describe(problems[1]), "^public%.guarded cannot be counted: query would be affected by "
    .. "row%-level security policy for table \"guarded\"")
  t.eq(ran(), "\n", "the policy's function did not run")
  -- A superuser is not subject to it, and counts every row.
  local admin <close> = pg.connect(PG.admin_url(DB))
  t.eq(#rowcheck.compare(admin, { { schema = "public", name = "guarded", rows = 2 } }), 0)
  t.eq(ran(), "\n")
end)

t.test("the database's search path cannot put a planted count() ahead of pg_catalog's", function()
  h.psql(url, [[
    CREATE FUNCTION public.spy_count(n bigint) RETURNS bigint LANGUAGE plpgsql AS
      $f$ BEGIN PERFORM public.spy('count'); RETURN coalesce(n, 0) + 1; END $f$;
    CREATE AGGREGATE public.count(*) (sfunc = public.spy_count, stype = bigint, initcond = '0');]])
  h.psql(PG.admin_url("postgres"), "ALTER DATABASE " .. DB .. " SET search_path = public, pg_catalog;")
  local c <close> = pg.connect(PG.admin_url(DB))
  c:query("SELECT count(*) AS n FROM a")
  t.match(ran(), "count", "the trap is set")
  h.psql(PG.admin_url(DB), "TRUNCATE ran;")
  local problems = rowcheck.compare(c, { { schema = "public", name = "a", rows = 10 } })
  t.eq(problems, {})
  t.eq(ran(), "\n", "the planted count() did not run")
  h.psql(PG.admin_url("postgres"), "ALTER DATABASE " .. DB .. " RESET search_path;")
end)
