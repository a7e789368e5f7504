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

t.test("latest with accept: the newest backup it takes; the ones of the database it refuses are counted", function()
  local d = h.tmpdir()
  put(d, "20250101000000_x.backup", "a", m("shop", 1))
  put(d, "20250102000000_x.backup", "b", m("shop", 1))
  put(d, "20250103000000_x.backup", "c", m("billing", 1))
  put(d, "20250104000000_x.backup", "dd", m("shop", 1)) -- size mismatch
  put(d, "20250105000000_x.backup", "e", m("shop", 1))
  local list = catalog.scan(d)
  local asked = {}
  local function accept(b)
    asked[#asked + 1] = b.name
    if b.name == "20250101000000_x.backup" then return { format = 1, database = "shop", stored = { bytes = 1 } } end
    return nil, b.path .. " is not signed"
  end
  local b, _, skipped = catalog.latest(list, "shop", nil, accept)
  t.eq(b.name, "20250101000000_x.backup")
  t.eq(skipped, 3, "two refused, one damaged")
  t.eq(asked, { "20250105000000_x.backup", "20250102000000_x.backup", "20250101000000_x.backup" },
    "asked only about complete backups of the database")
  -- the signed manifest decides the database
  b, _, skipped = catalog.latest(list, "shop", nil, function() return { format = 1, database = "billing" } end)
  t.eq(b, nil)
  t.eq(skipped, 1, "only the damaged one is passed over with a warning")
  t.eq(catalog.latest(list, nil, nil, function(e) return e.manifest end).name, "20250105000000_x.backup")
end)
