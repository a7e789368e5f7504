-- covers: bindings/archive/toc.c bindings/archive/parser.c bindings/archive.c
-- pgvault.archive with nothing to list keeps only the TOC entries that have
-- data: a large object is a BLOB entry with no data, so 100,000 of them
-- cost verify ~25 MB of kept entries (issue 14: verify of the 100k-LO
-- dataset peaked at ~100 MiB), and a listing is written as the entries are
-- read. Regression test: on the old code the TOC memory (read.toc_memory,
-- then missing) grew by ~250 bytes a large object, with or without --list.
local t = require "harness.testing"
local h = require "harness.env"
local fx = require "fixtures.pgdmp"
local archive = require "pgvault.archive"
local stream = require "pgvault.stream"
local fs = require "pgvault.fs"

local dir = h.tmpdir()
local dumps = {}

-- pg_dump -Fc of a database with one table and `n` large objects (each
-- with a comment, as the TOC of a real dump has them), made once.
local function lo_dump(n)
  if dumps[n] then return dumps[n] end
  local url = h.createdb("archive_lean_" .. n)
  h.psql(url, string.format([[
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 100) g;
SELECT lo_from_bytea(0, convert_to('large object ' || g, 'UTF8')) FROM generate_series(1, %d) g;
DO $$ DECLARE o oid; BEGIN
  FOR o IN SELECT oid FROM pg_largeobject_metadata ORDER BY oid LIMIT 10 LOOP
    EXECUTE format('COMMENT ON LARGE OBJECT %%s IS %%L', o, 'lo ' || o);
  END LOOP;
END $$;
]], n))
  dumps[n] = fx.pg_dump(url, dir .. "/lo_" .. n .. ".dump", {})
  return dumps[n]
end

local function tap(path, opts)
  return stream.run({ stream.file_reader(path), archive.verifier(opts), stream.discard() }).archive
end

t.test("the TOC memory of a verify does not grow with the number of large objects", function()
  local small, big = lo_dump(20), lo_dump(3000)
  for _, how in ipairs({ "read", "tap" }) do
    local function summary(path) return how == "read" and archive.read(path) or tap(path) end
    local a, b = summary(small), summary(big)
    t.eq(b.large_objects.count, 3000, how)
    t.eq(b.large_objects.uncompressed, a.large_objects.uncompressed + (function()
      local n = 0
      for g = 21, 3000 do n = n + #("large object " .. g) end
      return n
    end)(), how .. ": every large object's bytes are decoded")
    t.eq(b.totals.rows, 100, how)
    t.ok(b.toc_entries > 3000, how .. ": a BLOB entry per large object")
    local grown = b.read.toc_memory - a.read.toc_memory
    t.ok(grown <= 2980 * 8, string.format("%s: the TOC held %d more bytes for 2,980 more large objects (at most 8 "
      .. "each: their dump ids)", how, grown))
  end
end)

t.test("--list writes the lines as the entries pass, keeping no entry; the list matches pg_restore --list", function()
  local path = lo_dump(3000)
  local want, code, err = fx.pg_restore_list(path)
  t.eq(code, 0, err)
  local s = archive.read(path, { list = true })
  t.eq(s.list, want)
  t.eq(tap(path, { list = true }).list, want, "the tap")
  local plain = archive.read(path).read.toc_memory
  t.ok(s.read.toc_memory <= plain + 2 * #want + 8192, string.format("the listing's text (%d bytes) is what a listing "
    .. "adds to the TOC's %d bytes, not the entries: %d", #want, plain, s.read.toc_memory))
  local verbose = archive.read(path, { list = true, verbose = true }).list
  t.eq(tap(path, { list = true, verbose = true }).list, verbose, "verbose: the tap")
  t.match(verbose, "\n;\tdepends on: %d+\n", "verbose: dependencies")
  local r = h.pgvault({ "verify", "--list", path })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, want, "verify --list")
end)

-- The dump id field of the TOC entry with dump id `id` (BLOB entries:
-- table OID 2613, pg_largeobject): its position in data (1-based).
local function blob_id_at(data, id)
  local field = "\0" .. string.pack("<I4", id) .. "\0\0\0\0\0" .. "\0" .. string.pack("<I4", 4) .. "2613"
  local at = data:find(field, 1, true)
  assert(at and not data:find(field, at + 1, true), "one BLOB entry with dump id " .. id)
  return at
end

t.test("a dump id repeated by entries without data is still found", function()
  local path = lo_dump(20)
  local data = fs.read_file(path)
  local ids = {}
  local listing = archive.read(path, { list = true }).list
  for id in listing:gmatch("\n(%d+); 2613 %d+ BLOB ") do ids[#ids + 1] = tonumber(id) end
  t.ok(#ids == 20, "20 BLOB entries listed")
  local at = blob_id_at(data, ids[7])
  local bad = dir .. "/dup.dump"
  fs.write_file(bad, data:sub(1, at) .. string.pack("<I4", ids[3]) .. data:sub(at + 5))
  local want = "dump id " .. ids[3] .. " appears twice in the TOC"
  for _, list in ipairs({ false, true }) do
    local e = t.raises(function() archive.read(bad, { list = list }) end, want, "read, list " .. tostring(list))
    t.eq(e.kind, "archive")
    e = t.raises(function() tap(bad, { list = list }) end, want, "tap, list " .. tostring(list))
    t.eq(e.kind, "archive")
  end
  -- a BLOB entry given the dump id of the table's data (a kept entry): named
  local s = archive.read(path)
  local t_id = s.tables[1].dump_id
  fs.write_file(bad, data:sub(1, at) .. string.pack("<I4", t_id) .. data:sub(at + 5))
  local e = t.raises(function() tap(bad) end, "dump id " .. t_id .. " appears twice in the TOC")
  t.match(tostring(e), "TABLE DATA public%.t", "names the kept entry")
end)

t.teardown(function()
  for n in pairs(dumps) do h.dropdb("archive_lean_" .. n) end
end)
