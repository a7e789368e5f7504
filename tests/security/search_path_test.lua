-- covers: scripts/lib/backup.lua scripts/lib/restore.lua scripts/lib/drill.lua
-- Issue 11, the collation-fix class in backup, restore and the drill: a
-- database may carry ALTER DATABASE … SET search_path = public, pg_catalog,
-- and a function planted in public then shadows a built-in one that
-- pgvault's own queries call, running as the role that runs pgvault
-- (often a superuser). Every connection pgvault opens for its own queries
-- pins the search path (regression test: the planted function ran before).
-- The restore drill warns when its role is a superuser.
local t = require "harness.testing"
local h = require "harness.env"
local cjson = require "cjson"

local PG = h.pg()

t.test("a planted shobj_description does not run when backup reads the database's properties", function()
  local name = "search_path_planted"
  local url = h.createdb(name)
  h.psql(url, [[
    COMMENT ON DATABASE search_path_planted IS 'the real comment';
    CREATE TABLE public.ran (who text);
    CREATE FUNCTION public.shobj_description(oid, name) RETURNS text LANGUAGE sql
      AS $$ INSERT INTO public.ran VALUES (current_user) RETURNING 'planted' $$;
    ALTER DATABASE search_path_planted SET search_path = public, pg_catalog;]])
  -- the superuser runs the backup
  local d = h.tmpdir()
  local r = h.pgvault({ "-q", "backup", "--db", PG.admin_url(name), "--to", d })
  t.eq(r.code, 0, r.stderr)
  local path = r.stdout:match("([^\n]*)\n?$")
  local m = cjson.decode(h.read(path .. ".manifest.json"))
  t.eq(m.properties.comment, "the real comment")
  t.eq(h.psql(url, "SELECT count(*) FROM public.ran;"), "0\n", "the planted function never ran")
  h.dropdb(name)
end)

t.test("the restore drill warns when its role is a superuser", function()
  local src = h.createdb("search_path_drill_src")
  h.psql(src, "CREATE TABLE t AS SELECT 1 AS x;")
  local d = h.tmpdir()
  local b = h.pgvault({ "-q", "backup", "--db", src, "--to", d })
  local path = b.stdout:match("([^\n]*)\n?$")
  local r = h.pgvault({ "verify", path, "--restore-into", PG.admin_url("search_path_drill_scratch") })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "the restore drill runs the backup's code as postgres, a superuser")
  r = h.pgvault({ "verify", path, "--restore-into", PG.url("search_path_drill_scratch") })
  t.eq(r.code, 0, r.stderr)
  t.no_match(r.stderr, "superuser")
  h.dropdb("search_path_drill_src")
end)
