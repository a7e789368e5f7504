-- covers: scripts/lib/database.lua
-- lib.database: a database's properties as the manifest records them,
-- creating one like another, names that are free, the restore lock, and
-- applying settings as pg_dump quotes them (a list like search_path item
-- by item, so '"$user", public' stays two items).
local t = require "harness.testing"
local h = require "harness.env"
local database = require "lib.database"

local PG = h.pg()
local SUPER = PG.admin_url("postgres")

t.test("properties, create like them, apply them", function()
  local admin <close> = database.admin_connect(SUPER)
  database.drop(admin, "db_props_src")
  admin:exec([[CREATE DATABASE db_props_src TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C.UTF-8'
    LC_CTYPE 'C.UTF-8' CONNECTION LIMIT 3]])
  admin:exec([[ALTER DATABASE db_props_src SET search_path = "$user", public, "a ""b"", c";
    ALTER DATABASE db_props_src SET work_mem = '5MB'; COMMENT ON DATABASE db_props_src IS 'it''s';
    REVOKE TEMPORARY ON DATABASE db_props_src FROM PUBLIC]])
  local p = database.properties(admin, "db_props_src")
  t.eq({ p.encoding, p.collate, p.ctype, p.locale_provider, p.connection_limit, p.comment },
    { "UTF8", "C.UTF-8", "C.UTF-8", "libc", 3, "it's" })
  t.eq(#p.settings, 2)
  t.ok(p.acl and #p.acl > 0, "an explicit ACL")
  t.eq(database.properties(admin, "db_props_nope"), nil)
  database.drop(admin, "db_props_copy")
  database.create(admin, "db_props_copy", p)
  t.eq(database.apply(admin, "db_props_copy", p), 0)
  local q = database.properties(admin, "db_props_copy")
  q.owner, p.owner = nil, nil
  t.eq(q, p, "the copy has every property")
  t.eq(h.psql(PG.admin_url("db_props_copy"), "SHOW search_path;"), '"$user", public, "a ""b"", c"\n')
  local e = t.raises(function() database.create(admin, "db_props_copy", p) end, "already exists")
  t.eq(e.kind, "exists")
  t.eq(database.free_name(admin, "db_props", "_copy"), "db_props_copy_2")
  database.drop(admin, "db_props_copy")
  database.drop(admin, "db_props_src")
end)

t.test("one restore of a database at a time", function()
  local a <close> = database.admin_connect(SUPER)
  local b <close> = database.admin_connect(SUPER)
  database.lock(a, "db_lock_test")
  local e = t.raises(function() database.lock(b, "db_lock_test") end,
    "another pgvault restore of database db_lock_test is running")
  t.eq(e.kind, "exists")
  database.lock(b, "db_lock_other")
  -- once the holder lets go (a restore does by closing its connection), the next one may
  a:query("SELECT pg_advisory_unlock_all()")
  database.lock(b, "db_lock_test")
end)

t.test("a manifest's privilege must be one of a database's", function()
  local admin <close> = database.admin_connect(SUPER)
  t.raises(function()
    database.apply(admin, "postgres", { acl = { { privilege = "ALL; DROP TABLE x" } } })
  end, "unknown database privilege")
end)
