-- covers: scripts/lib/destination.lua
-- lib.destination: where backups are written. A name is reserved before a
-- byte is written, a second backup in the same second gets STAMP-2_…, and
-- nothing is overwritten, in a directory and in a bucket. Before, two
-- backups in one second got the same name: locally the second failed or
-- both wrote one .partial; in a bucket the second replaced the first
-- (regression tests: the concurrent ones below, and in backup_test.lua).
local t = require "harness.testing"
local h = require "harness.env"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local stream = require "pgvault.stream"
local destination = require "lib.destination"
local manifest = require "lib.manifest"

local STAMP = "20250102030405"

local s3opts = require("harness.s3").direct

local function write_backup(dest, data, ext)
  dest:reserve(STAMP, "local", ext or ".zst")
  stream.run { stream.string(data), dest:writer() }
  dest.archive_written = true
  return dest:commit(manifest.new { stored = { name = dest.name, bytes = #data } })
end

local function names(dir)
  local out = fs.listdir(dir)
  table.sort(out)
  return out
end

t.test("a directory: the seed's name first, then -2, -3; reservations gone afterwards", function()
  local d = h.tmpdir() .. "/backups"
  for i = 1, 3 do
    local dest <close> = destination.open(d)
    write_backup(dest, "backup " .. i)
  end
  t.eq(names(d), { "20250102030405-2_local.backup.zst", "20250102030405-2_local.backup.zst.manifest.json",
    "20250102030405-3_local.backup.zst", "20250102030405-3_local.backup.zst.manifest.json",
    "20250102030405_local.backup.zst", "20250102030405_local.backup.zst.manifest.json" })
  t.eq(fs.read_file(d .. "/20250102030405-2_local.backup.zst"), "backup 2")
  -- another extension of the same stem is not a free name either
  local dest <close> = destination.open(d)
  t.eq(dest:reserve(STAMP, "local", ""), d .. "/20250102030405-4_local.backup")
end)

t.test("a file someone else put under the name is skipped, never replaced", function()
  local d = h.tmpdir()
  h.write(d .. "/20250102030405_local.backup.zst", "not ours")
  local dest <close> = destination.open(d)
  write_backup(dest, "ours")
  t.eq(dest.name, "20250102030405-2_local.backup.zst")
  t.eq(h.read(d .. "/20250102030405_local.backup.zst"), "not ours")
end)

t.test("an unfinished backup is removed when the destination closes; a committed one stays", function()
  local d = h.tmpdir()
  do
    local dest <close> = destination.open(d)
    dest:reserve(STAMP, "local", ".zst")
    t.ok(fs.exists(d .. "/.20250102030405_local.reserved"), "the reservation is a dot file")
    stream.run { stream.string("half"), dest:writer() }
    dest.archive_written = true
    dest:write_beside(".sig", "a signature")
  end
  t.eq(names(d), {}, "archive, signature and reservation removed")
  local dest <close> = destination.open(d)
  write_backup(dest, "whole")
  dest:close()
  t.eq(#names(d), 2)
end)

t.test("a manifest that is there already is never replaced: the commit fails and removes the archive", function()
  local d = h.tmpdir()
  local dest <close> = destination.open(d)
  dest:reserve(STAMP, "local", ".zst")
  stream.run { stream.string("data"), dest:writer() }
  dest.archive_written = true
  h.write(dest.path .. ".manifest.json", "someone else's")
  local e = t.raises(function() dest:commit(manifest.new {}) end)
  t.eq(e.kind, "exists")
  t.eq(h.read(dest.path .. ".manifest.json"), "someone else's")
  t.ok(not fs.exists(dest.path), "the uncommitted archive is gone")
end)

t.test("a bucket: -2 in the same second, reservations removed, the manifest written only if absent", function()
  local bucket = "s3://destination-test"
  local s3 = require "pgvault.s3"
  s3.create_bucket(bucket, s3opts())
  for i = 1, 2 do
    local dest <close> = destination.open(bucket .. "/p/", { s3 = s3opts() })
    write_backup(dest, "backup " .. i)
  end
  local c <close> = s3.client(s3opts())
  local keys = {}
  for _, o in ipairs(c:list(bucket .. "/p/")) do keys[#keys + 1] = o.key end
  table.sort(keys)
  t.eq(keys, { "p/20250102030405-2_local.backup.zst", "p/20250102030405-2_local.backup.zst.manifest.json",
    "p/20250102030405_local.backup.zst", "p/20250102030405_local.backup.zst.manifest.json" })
  t.eq(c:get(bucket .. "/p/20250102030405_local.backup.zst"), "backup 1")
end)

-- Two processes reserve at once (same time stamp): each gets its own name.
local function concurrent(to, env)
  local d = h.tmpdir()
  local script = d .. "/reserve.lua"
  h.write(script, [[
local destination = require "lib.destination"
local stream = require "pgvault.stream"
local manifest = require "lib.manifest"
local s3 = arg[3] and { endpoint_url = arg[3], region = arg[4] } or nil
local dest <close> = destination.open(arg[1], { s3 = s3 })
dest:reserve("20250102030405", "local", ".zst")
stream.run { stream.string(arg[2]), dest:writer() }
dest.archive_written = true
dest:commit(manifest.new {})
print(dest.name)
]])
  local handles = {}
  local c = h.s3()
  for i = 1, 4 do
    local argv = { h.bin, "run", script, to, "writer " .. i }
    if env then
      argv[#argv + 1], argv[#argv + 2] = c.endpoint, c.region
    end
    argv.env = env
    handles[i] = proc.spawn(argv)
  end
  for i, hd in ipairs(handles) do
    local code = hd:wait(60)
    hd:close()
    t.eq(code, 0, "writer " .. i)
  end
end

t.test("four processes reserving in one directory at once get four names", function()
  local d = h.tmpdir()
  concurrent(d)
  local archives = {}
  for _, n in ipairs(names(d)) do
    if not n:find("manifest") then archives[#archives + 1] = n end
  end
  t.eq(#archives, 4, table.concat(names(d), " "))
  local contents = {}
  for _, n in ipairs(archives) do contents[h.read(d .. "/" .. n)] = true end
  t.eq(contents, { ["writer 1"] = true, ["writer 2"] = true, ["writer 3"] = true, ["writer 4"] = true })
end)

t.test("four processes reserving in one prefix at once get four names", function()
  local s3 = require "pgvault.s3"
  s3.create_bucket("s3://destination-race", s3opts())
  local env = {}
  for k, v in pairs(h.s3().env) do env[k] = v end
  concurrent("s3://destination-race/p/", env)
  local c <close> = s3.client(s3opts())
  local contents, n = {}, 0
  for _, o in ipairs(c:list("s3://destination-race/p/")) do
    if not o.key:find("manifest") then
      n = n + 1
      contents[c:get("s3://destination-race/" .. o.key)] = true
    end
  end
  t.eq(n, 4)
  t.eq(contents, { ["writer 1"] = true, ["writer 2"] = true, ["writer 3"] = true, ["writer 4"] = true })
end)
