-- covers: scripts/lib/naming.lua
-- lib.naming: building and parsing backup names, the same-second sequence,
-- the order of a listing, claiming a name, and database names cut by
-- characters (a long non-ASCII name made every restore fail: its temporary
-- names were cut by bytes, in the middle of a character).
local t = require "harness.testing"
local h = require "harness.env"
local fs = require "pgvault.fs"
local naming = require "lib.naming"

t.test("stamps are UTC and round-trip", function()
  t.eq(naming.stamp(0), "19700101000000")
  t.eq(naming.stamp_time("19700101000000"), 0)
  t.eq(naming.stamp_time(naming.stamp(1764065910)), 1764065910)
  t.eq(naming.iso8601(1764065910), "2025-11-25T10:18:30Z")
  t.eq(naming.stamp_time("2025"), nil)
end)

t.test("names: the seed's format, and -N for a second backup in the same second", function()
  t.eq(naming.archive_name("20251125101830", "prod", ".zst"), "20251125101830_prod.backup.zst")
  t.eq(naming.archive_name("20251125101830", "prod", ".zst", 1), "20251125101830_prod.backup.zst")
  t.eq(naming.archive_name("20251125101830", "prod", ".zst.age", 2), "20251125101830-2_prod.backup.zst.age")
  t.raises(function() naming.archive_name("20251125101830", "../x", "") end, "invalid environment")
  local b = naming.parse("/d/20251125101830-12_my-env_2.backup.zst.age")
  t.eq(b.seq, 12)
  t.eq(b.env, "my-env_2")
  t.eq(b.stamp, "20251125101830")
  t.ok(b.zst and b.age, "layers from the extension")
  t.eq(naming.parse("20251125101830_prod.backup").seq, 1)
  for _, bad in ipairs({ "20251125101830_prod.backup.manifest.json", ".20251125101830_prod.backup.zst.x.partial",
    "20251125101830_prod.backup.gz", "2025112510183_prod.backup", "20251125101830-1_prod.backup",
    "20251125101830-02_prod.backup", "20251125101830-_prod.backup", "20251125101830_.backup",
    ".20251125101830_prod.reserved", "20251125101830_prod.backup.zst.partial" }) do
    t.eq(naming.parse(bad), nil, bad)
  end
end)

t.test("newest first: by time, then the sequence within a second, then name", function()
  local names = { "20250101000000_a.backup", "20250101000000-2_a.backup", "20250101000000-10_a.backup",
    "20250101000001_a.backup", "20241231235959-3_z.backup" }
  local list = {}
  for _, n in ipairs(names) do list[#list + 1] = naming.parse(n) end
  table.sort(list, naming.newer)
  local got = {}
  for i, b in ipairs(list) do got[i] = b.name end
  t.eq(got, { "20250101000001_a.backup", "20250101000000-10_a.backup", "20250101000000-2_a.backup",
    "20250101000000_a.backup", "20241231235959-3_z.backup" })
end)

t.test("claim creates a name only if it is free, and never replaces it", function()
  local d = h.tmpdir()
  t.eq(naming.claim(d .. "/x", "one"), d .. "/x")
  t.eq(fs.stat(d .. "/x").mode, 384)
  t.eq(t.raises(function() naming.claim(d .. "/x", "two") end).kind, "exists")
  t.eq(fs.read_file(d .. "/x"), "one")
  t.eq(#fs.listdir(d), 1, "no temporary file left")
end)

t.test("database names with a suffix stay within 63 bytes, cut between characters", function()
  t.eq(naming.db_with_suffix("app", "_restore_1"), "app_restore_1")
  local suffix = "_restore_20250101000000"
  for _, ch in ipairs({ "é", "ж", "東", "😀" }) do -- 2, 2, 3 and 4 bytes
    local name = naming.db_with_suffix(string.rep(ch, 40), suffix)
    t.ok(#name <= 63, "within 63 bytes: " .. #name)
    t.ok(utf8.len(name), "valid UTF-8: " .. name)
    t.ok(63 - #name < #ch, "as long as it can be")
    t.eq(name:sub(-#suffix), suffix)
  end
  t.eq(naming.cut("abc\xff\xfe", 4), "abc\xff", "not UTF-8: cut by bytes")
end)
