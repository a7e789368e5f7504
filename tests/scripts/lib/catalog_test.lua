-- covers: scripts/lib/catalog.lua
-- lib.catalog: the backups in a directory with their manifest status, the
-- newest first (the same second's -N after it), and "latest" of one
-- database (before, latest took any database's newest backup).
local t = require "harness.testing"
local h = require "harness.env"
local catalog = require "lib.catalog"

local function put(d, name, data, manifest)
  h.write(d .. "/" .. name, data)
  if manifest then h.write(d .. "/" .. name .. ".manifest.json", manifest) end
end

local function m(db, bytes)
  return string.format('{"format": 1, "database": "%s", "stored": {"bytes": %d}}', db, bytes)
end

t.test("scan: statuses, order, and what is not a backup", function()
  local d = h.tmpdir()
  put(d, "20250101000000_x.backup", "a", m("shop", 1))
  put(d, "20250101000000-2_x.backup", "bb", m("shop", 9))
  put(d, "20250101000000-3_x.backup", "c")
  put(d, "20250101000001_x.backup.zst", "dd", '{"format": 1, "database": 5}')
  put(d, ".20250101000002_x.reserved", "")
  put(d, ".20250101000002_x.backup.zst.x1y2.partial", "")
  local list = catalog.scan(d)
  local got = {}
  for i, b in ipairs(list) do got[i] = b.name .. " " .. b.status end
  t.eq(got, { "20250101000001_x.backup.zst invalid", "20250101000000-3_x.backup missing",
    "20250101000000-2_x.backup size mismatch", "20250101000000_x.backup ok" })
  t.match(list[1].problem, "database must be a string")
  t.raises(function() catalog.scan(d .. "/nope") end, "no such directory")
  t.raises(function() catalog.scan(d .. "/20250101000000_x.backup") end, "not a directory")
end)

t.test("latest: the newest complete backup, of one database when asked", function()
  local d = h.tmpdir()
  put(d, "20250101000000_x.backup", "a", m("shop", 1))
  put(d, "20250102000000_x.backup", "b", m("billing", 1))
  put(d, "20250103000000_x.backup", "c") -- newest, unfinished
  local list = catalog.scan(d)
  t.eq(catalog.latest(list).name, "20250102000000_x.backup")
  t.eq(catalog.latest(list, "shop").name, "20250101000000_x.backup")
  local none, names = catalog.latest(list, "crm")
  t.eq(none, nil)
  t.eq(names, { "billing", "shop" })
end)
