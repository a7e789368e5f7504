-- covers: scripts/lib/source.lua
-- lib.source: a backup to read, read once. Before, verify of a pipe, a FIFO
-- or <(…) read its first 64 bytes and opened it again, so a good backup
-- was reported damaged (regression tests here and in verify_test.lua).
local t = require "harness.testing"
local h = require "harness.env"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local stream = require "pgvault.stream"
local source = require "lib.source"

local DATA = "PGDMP" .. string.rep("x", 200000)

local function read_all(src)
  return stream.run { src:reader(), stream.buffer() }.buffer.data
end

t.test("a file: its manifest (optional or required), head, layers", function()
  local d = h.tmpdir()
  h.write(d .. "/a.backup", DATA)
  local src <close> = source.open(d .. "/a.backup")
  t.eq(src.layers, { "pgdmp" })
  t.eq(src.file, d .. "/a.backup")
  t.eq(src.size, #DATA)
  t.eq(src.manifest, nil)
  t.match(src.why, "no manifest")
  t.eq(read_all(src), DATA)
  local e = t.raises(function() source.open(d .. "/a.backup", { manifest = "required" }) end,
    "no manifest for .*only complete backups restore")
  t.eq(e.kind, "verify")
  h.write(d .. "/a.backup.manifest.json", '{"format": 1, "database": "app"}')
  local with <close> = source.open(d .. "/a.backup")
  t.eq(with.manifest.database, "app")
  t.eq(with.manifest_text, '{"format": 1, "database": "app"}')
  local skip <close> = source.open(d .. "/a.backup", { manifest = "skip" })
  t.eq(skip.manifest, nil)
end)

t.test("a FIFO is read once, whole", function()
  local d = h.tmpdir()
  h.write(d .. "/a.backup", DATA)
  t.eq(h.run({ "mkfifo", d .. "/fifo" }).code, 0)
  local writer = proc.spawn({ "sh", "-c", 'cat "$1" > "$2"', "sh", d .. "/a.backup", d .. "/fifo" })
  local src <close> = source.open(d .. "/fifo")
  t.eq(src.layers, { "pgdmp" })
  t.eq(read_all(src), DATA, "every byte, the first ones too")
  t.eq(writer:wait(10), 0)
  writer:close()
  local copy = src.file
  src:close()
  t.ok(not fs.exists(copy), "the private copy is removed")
end)

t.test("DIR/latest, of one database; errors name the place", function()
  local d = h.tmpdir()
  h.write(d .. "/20250101000000_x.backup", DATA)
  h.write(d .. "/20250101000000_x.backup.manifest.json", '{"format": 1, "database": "shop"}')
  h.write(d .. "/20250102000000_x.backup", DATA)
  h.write(d .. "/20250102000000_x.backup.manifest.json", '{"format": 1, "database": "billing"}')
  local a <close> = source.open(d .. "/latest")
  t.eq(a.name, d .. "/20250102000000_x.backup")
  local b <close> = source.open(d .. "/latest", { database = "shop" })
  t.eq(b.name, d .. "/20250101000000_x.backup")
  t.raises(function() source.open(d .. "/latest", { database = "crm" }) end,
    "no complete backup of database crm in .* %(it holds backups of billing, shop%)")
  t.raises(function() source.open(h.tmpdir() .. "/latest") end, "no complete backup %(one with a manifest%) in ")
  t.raises(function() source.open(d .. "/nope") end, "no such file")
  t.raises(function() source.open(d) end, "it is a directory")
  h.write(d .. "/junk", "hello")
  t.eq(t.raises(function() source.open(d .. "/junk") end, "is not a backup").kind, "verify")
end)
