-- covers: bindings/archive.c bindings/archive/
-- pgvault.archive: the PGDMP reader. Its --list output is compared byte for
-- byte with pg_restore --list on pg_dump 15 archives (compressed or not,
-- data-only, schema-only, large objects, file or pipe) and on generated
-- archives 1.12-1.14; generated 1.15/1.16 archives cover lz4 and zstd. The
-- corruption matrix checks that damage fails with a precise message, the
-- tap that bytes pass unchanged, and the fuzz corpus replays.
local t = require "harness.testing"
local h = require "harness.env"
local fx = require "fixtures.pgdmp"
local archive = require "pgvault.archive"
local stream = require "pgvault.stream"
local fs = require "pgvault.fs"

local dir = h.tmpdir()
local db_url
local dumps = {}

local function db()
  if not db_url then db_url = fx.sample_db("archive_test", 5000) end
  return db_url
end

-- pg_dump 15 archives, made once and shared by the tests below.
local function dump(name, args, pipe)
  if not dumps[name] then dumps[name] = fx.pg_dump(db(), dir .. "/" .. name .. ".dump", args, pipe) end
  return dumps[name]
end

-- Positions of the chunk payloads of the block at `off` (a data block).
local function chunks_of(data, off)
  local out = {}
  local p = off + 6 -- after the type byte and the dump id Int (1-based string)
  while true do
    local sign, len = data:byte(p), string.unpack("<I4", data, p + 1)
    if sign ~= 0 or len == 0 then break end
    out[#out + 1] = { start = p + 5, len = len, len_at = p }
    p = p + 5 + len
  end
  return out
end

local function rows_by_table(s)
  local by = {}
  for _, tb in ipairs(s.tables) do by[(tb.schema or "") .. "." .. tb.name] = tb.rows end
  return by
end

local function list_of(path)
  return archive.read(path, { list = true }).list
end

local function same_as_pg_restore(path, what)
  local want, code, err = fx.pg_restore_list(path)
  t.eq(code, 0, "pg_restore --list on " .. what .. ": " .. err)
  t.eq(list_of(path), want, "--list of " .. what)
end

local function read_file(path) return fs.read_file(path) end

local function write(path, data)
  fs.write_file(path, data)
  return path
end

t.test("--list is byte-identical to pg_restore --list on pg_dump 15 archives", function()
  local cases = {
    { "default", {} }, { "default_pipe", {}, true }, { "z0", { "-Z0" } }, { "z0_pipe", { "-Z0" }, true },
    { "z1", { "-Z1" } }, { "z9_pipe", { "-Z9" }, true }, { "data_only", { "-a" } },
    { "schema_only", { "-s" } }, { "no_blobs", { "--no-blobs" } }, { "inserts", { "--inserts", "-Z0" } },
  }
  for _, c in ipairs(cases) do same_as_pg_restore(dump(c[1], c[2], c[3]), c[1]) end
end)

t.test("the summary counts every COPY row, decoded bytes and large objects", function()
  local s = archive.read(dump("default", {}))
  t.eq(s.version, "1.14")
  t.eq(s.compression, "gzip")
  t.eq(s.compression_level, -1)
  t.eq(s.dbname, "archive_test")
  t.eq(s.complete, true)
  t.eq(s.offsets, true, "pg_dump -f writes data offsets")
  local by = {}
  for _, tb in ipairs(s.tables) do by[(tb.schema or "") .. "." .. tb.name] = tb end
  t.eq(by["public.t1"].rows, 5000)
  t.eq(by["public.empty"].rows, 0)
  t.eq(by["public.empty"].uncompressed, 5, "an empty table is the 5 bytes \\.\\n\\n\\n")
  t.eq(by["s2.we\nird"].rows, 3)
  t.ok(by["public.t1"].compressed < by["public.t1"].uncompressed, "gzip shrinks the table")
  t.eq(s.large_objects.count, 2)
  t.eq(s.large_objects.uncompressed, #"hello large object")
  t.eq(s.totals.rows, 5003)
  t.eq(s.totals.tables, 3)
  local p = archive.read(dump("default_pipe", {}, true))
  t.eq(p.offsets, false, "a pipe leaves the data offsets unset")
  t.eq(p.totals, s.totals, "same data through a pipe")
  local z0 = archive.read(dump("z0", { "-Z0" }))
  t.eq(z0.compression, "none")
  t.eq(z0.totals.rows, 5003)
  t.eq(z0.totals.compressed, z0.totals.uncompressed)
  local ins = archive.read(dump("inserts", { "--inserts", "-Z0" }))
  t.eq(ins.totals.rows, s.totals.rows, "INSERT statements count the same rows as COPY")
  t.eq(rows_by_table(ins), rows_by_table(s))
end)

-- Regression: the rows of INSERT data (pg_dump --inserts) were not counted,
-- so verify said "0 rows". Values and names hold what could pass for SQL
-- structure: ';', "),(", newlines, quotes, backslashes, the word VALUES.
local inserts_url
local function inserts_db()
  if inserts_url then return inserts_url end
  inserts_url = h.createdb("archive_inserts")
  h.psql(inserts_url, [==[
CREATE TABLE plain (id int PRIMARY KEY, v text, b bytea, arr text[], j jsonb, n numeric, f float8,
  bits bit(4), flag bool);
INSERT INTO plain VALUES
 (1, 'a;b', '\x00ff', '{"x,y","),("}', '{"k": "v;w"}', 1.5, 'NaN', B'1010', true),
 (2, E'it''s ),( here', NULL, NULL, NULL, NULL, '-Infinity', NULL, false),
 (3, E'line\nbreak;\n);INSERT INTO plain VALUES (9', NULL, '{}', '[]', -3, 1e300, B'0000', NULL),
 (4, E'back\\slash\\', NULL, NULL, NULL, 0, 0, NULL, NULL),
 (5, '"double" ''single'' VALUES ソ表', NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (6, E'q\\''\\', NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO plain (id, v) SELECT g, repeat('x;', g % 7) || ')(' || E'\\' FROM generate_series(7, 1006) g;
CREATE TABLE "we;ird (VALUES)" ("values" int, "a""b" text, g int GENERATED ALWAYS AS ("values" * 2) STORED,
  id int GENERATED ALWAYS AS IDENTITY);
INSERT INTO "we;ird (VALUES)" ("values", "a""b") SELECT g, 'r' || g FROM generate_series(1, 25) g;
CREATE TABLE nocols ();
INSERT INTO nocols DEFAULT VALUES;
INSERT INTO nocols DEFAULT VALUES;
INSERT INTO nocols DEFAULT VALUES;
CREATE TABLE none_here (a int);
CREATE TABLE parted (k int, v text) PARTITION BY RANGE (k);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);
CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (100) TO (200);
INSERT INTO parted SELECT g, 'p;' || g FROM generate_series(0, 199) g;
]==])
  return inserts_url
end

local inserts_rows = { ["public.plain"] = 1006, ["public.we;ird (VALUES)"] = 25, ["public.nocols"] = 3,
  ["public.none_here"] = 0, ["public.parted_1"] = 100, ["public.parted_2"] = 100 }


t.test("the summary counts the rows of INSERT statements (pg_dump --inserts and its variants)", function()
  local url = inserts_db()
  local cases = {
    { "ins", { "--inserts" } },
    { "ins_z0", { "--inserts", "-Z0" } },
    { "colins", { "--column-inserts" } },
    { "rpi7", { "--rows-per-insert=7", "-Z0" } },
    { "rpi1000", { "--rows-per-insert=1000", "--on-conflict-do-nothing" } },
    { "root", { "--inserts", "--load-via-partition-root", "-Z0" } },
    { "copy", {} },
  }
  for _, c in ipairs(cases) do
    local path = fx.pg_dump(url, dir .. "/" .. c[1] .. ".dump", c[2])
    local s = archive.read(path)
    t.eq(rows_by_table(s), inserts_rows, c[1])
    t.eq(s.totals.rows, 1234, c[1])
    local r = stream.run { stream.file_reader(path), archive.verifier(), stream.discard() }
    t.eq(r.archive.totals.rows, 1234, c[1] .. " (tap)")
  end
  local out = h.pgvault({ "verify", dir .. "/rpi7.dump" })
  t.eq(out.code, 0, out.stderr)
  t.match(out.stdout, "6 tables, 1234 rows", "verify's summary line")
  t.match(out.stdout, "public%.plain%s+1006 rows", "verify's table line")
end)

t.test("INSERT rows with standard_conforming_strings off (backslashes and quotes doubled)", function()
  local url = inserts_db()
  h.psql(url, "ALTER DATABASE archive_inserts SET standard_conforming_strings = off;")
  local ok, err = pcall(function()
    local path = fx.pg_dump(url, dir .. "/stdoff.dump", { "--rows-per-insert=3", "-Z0" })
    t.ok(read_file(path):find("back\\\\slash", 1, true), "pg_dump doubled the backslashes")
    t.eq(rows_by_table(archive.read(path)), inserts_rows)
    -- in SJIS, 表 is 0x95 0x5c: its second byte looks like a backslash, and
    -- pg_dump copies multibyte characters whole: it must not escape the quote
    local sjis = fx.pg_dump(url, dir .. "/sjis.dump", { "--inserts", "-Z0", "-E", "SJIS" })
    t.ok(read_file(sjis):find("\x95\x5c'", 1, true), "a value ends in 0x5c before its closing quote")
    t.eq(rows_by_table(archive.read(sjis)), inserts_rows, "SJIS")
  end)
  h.psql(url, "ALTER DATABASE archive_inserts RESET standard_conforming_strings;")
  if not ok then error(err, 0) end
end)

t.test("INSERT data that ends inside a statement is damage", function()
  local path = fx.pg_dump(inserts_db(), dir .. "/ins_cut.dump", { "--inserts", "-Z0" })
  local data = read_file(path)
  local s = archive.read(path)
  local plain
  for _, tb in ipairs(s.tables) do if tb.name == "plain" then plain = tb end end
  local chunks = chunks_of(data, plain.offset + 1)
  -- the chunks end with the last row's ");\n" pieces and pg_dump's "\n\n"
  local last_semi
  for k, c in ipairs(chunks) do
    if data:sub(c.start, c.start + c.len - 1) == ";\n" then last_semi = k end
  end
  t.ok(last_semi, "found the last statement's end")
  local c = chunks[last_semi]
  local cut = data:sub(1, c.len_at - 1) .. data:sub(c.start + c.len)
  -- the block is shorter now: the TOC's later offsets no longer fit, so
  -- read it in one sequential pass, as a tap does
  local e = t.raises(function()
    stream.run { stream.string(cut), archive.verifier(), stream.discard() }
  end, "the INSERT data ends inside a statement: rows are missing")
  t.match(tostring(e), "TABLE DATA public%.plain")
end)

-- Regression: the reader fell back to a sequential read without saying so,
-- so nothing could tell a lost parallel read from a working one.
t.test("parallel and sequential whole-file reads agree, and say which ran", function()
  local path = dump("z1", { "-Z1" })
  local one = archive.read(path, { threads = 1 })
  local four = archive.read(path, { threads = 4 })
  t.eq(four.read.toc_memory, one.read.toc_memory, "the same TOC kept")
  one.read.toc_memory = nil
  t.eq(one.read, { mode = "sequential", threads = 1, ranges = 1, reason = "one thread was asked for" })
  t.eq(four.read.mode, "parallel")
  t.ok(four.read.threads >= 2 and four.read.ranges == four.read.threads, "ranges on threads of their own")
  one.read, four.read = nil, nil
  t.eq(four, one)
  local piped = archive.read(dump("default_pipe", {}, true), { threads = 4 })
  t.eq(piped.read.mode, "sequential")
  t.match(piped.read.reason, "no data offsets")
  local r = stream.run { stream.file_reader(path), archive.verifier(), stream.discard() }
  t.eq(r.archive.read.mode, "stream")
end)

t.test("generated archives 1.12 to 1.14 list exactly as pg_restore 15 and restore cleanly", function()
  for _, v in ipairs({ 12, 13, 14 }) do
    for _, algo in ipairs({ "none", "gzip" }) do
      for _, pipe in ipairs({ false, true }) do
        local name = string.format("%s/gen%d_%s_%s", dir, v, algo, pipe and "pipe" or "file")
        fx.gen(name, v, algo, pipe and "pipe" or "file", "rows=700", "chunk=100")
        same_as_pg_restore(name, name)
        local r = h.run({ fx.bindir() .. "/pg_restore", "-f", "/dev/null", name })
        t.eq(r.code, 0, "pg_restore reads every block of " .. name .. ": " .. r.stderr)
        local s = archive.read(name)
        t.eq(s.version, "1." .. v)
        t.eq(s.totals.rows, 703, name)
        t.eq(s.large_objects.count, 2, name)
      end
    end
  end
end)

t.test("1.15 and 1.16 archives with gzip, lz4 and zstd (generated)", function()
  for _, v in ipairs({ 15, 16 }) do
    for _, algo in ipairs({ "none", "gzip", "lz4", "zstd" }) do
      for _, pipe in ipairs({ false, true }) do
        local name = string.format("%s/gen%d_%s_%s", dir, v, algo, pipe and "pipe" or "file")
        fx.gen(name, v, algo, pipe and "pipe" or "file", "rows=4000", "chunk=333")
        local s = archive.read(name, { list = true })
        t.eq(s.compression, algo, name)
        t.eq(s.offsets, not pipe, name)
        t.eq(s.totals.rows, 4003, name)
        t.eq(s.large_objects.count, 2, name)
        t.eq(s.large_objects.uncompressed, #"hello large object", name)
        -- same archive as 1.14 (gzip/none) listed by pg_restore 15: the entry
        -- lines match, and the header differs only where pg_restore 16/17 do.
        local twin = name .. ".114"
        fx.gen(twin, 14, "gzip", "rows=4000")
        local want = fx.pg_restore_list(twin)
        want = want:gsub(";     Compression: %-1\n", ";     Compression: " .. algo .. "\n")
          :gsub("Dump Version: 1%.14%-0", "Dump Version: 1." .. v .. "-0")
        if v == 16 then
          want = want:gsub("3374; 2613 16411 BLOB %- 16411 gen\n3375; 2613 16412 BLOB %- 16412 gen\n",
            "3374; 0 0 BLOB METADATA - 16411..16412 gen\n")
            :gsub("TOC Entries: 17", "TOC Entries: 16")
            :gsub("3376; 0 0 BLOBS %- BLOBS \n", "3376; 0 0 BLOBS - 16411..16412 gen\n")
        end
        t.eq(s.list, want, "--list of " .. name)
      end
    end
  end
end)

local function expect_failure(path, pattern, what)
  local e = t.raises(function() archive.read(path) end, pattern, what)
  t.eq(e.kind, "archive", what)
  -- the streaming tap fails the same way
  local e2 = t.raises(function()
    stream.run { stream.file_reader(path), archive.verifier(), stream.discard() }
  end, nil, what .. " (tap)")
  t.eq(e2.kind, "archive", what .. " (tap)")
  return e
end

local function flip(data, pos, mask)
  return data:sub(1, pos - 1) .. string.char(data:byte(pos) ~ (mask or 0x10)) .. data:sub(pos + 1)
end

t.test("truncation anywhere fails with the byte offset and the entry", function()
  local src = dump("z1", { "-Z1" })
  local data = read_file(src)
  local s = archive.read(src)
  local t1
  for _, tb in ipairs(s.tables) do if tb.name == "t1" then t1 = tb end end
  local cuts = { 0, 1, 4, 5, 8, 11, 20, 60, s.toc_bytes - 1, s.toc_bytes, s.toc_bytes + 1,
    t1.offset + 3, t1.offset + 10, t1.offset + t1.block_bytes - 1, #data - 1 }
  for k = 1, 40 do cuts[#cuts + 1] = (k * 7919) % #data end
  for _, cut in ipairs(cuts) do
    local path = write(dir .. "/cut", data:sub(1, cut))
    local e = expect_failure(path, "archive truncated at byte " .. cut, "cut at " .. cut)
    t.eq(e.offset, cut)
    if cut > t1.offset and cut < t1.offset + t1.block_bytes then
      t.match(tostring(e), "entry " .. t1.dump_id .. " %(TABLE DATA public%.t1%)", "names the table")
    end
  end
  local e = expect_failure(write(dir .. "/empty", ""), "the input is empty", "empty file")
  t.eq(e.offset, 0)
end)

t.test("pg_restore --list accepts a truncated archive; pgvault rejects it", function()
  local data = read_file(dump("default", {}))
  local path = write(dir .. "/half.dump", data:sub(1, #data // 2))
  local _, code = fx.pg_restore_list(path)
  t.eq(code, 0, "pg_restore --list only reads the TOC")
  local e = expect_failure(path, "archive truncated", "half an archive")
  t.match(tostring(e), "TABLE DATA public%.t1")
  local r = h.pgvault({ "verify", path })
  t.eq(r.code, 1)
end)

t.test("header damage: wrong magic, versions, sizes, format, compression, time", function()
  local data = read_file(dump("default", {}))
  local cases = {
    { 1, "no PGDMP magic string" },
    { 7, "unsupported archive version 1%.30" },    -- 0x0E ~ 0x10 = 30
    { 9, "the integer size is 20, not 1 to 8" },
    { 10, "the offset size is 24, not 1 to 8" },
    { 11, "format 17 is not the custom format" },
    { 12, "bad sign byte" },
    { 19, "the creation time's seconds is %d+, not 0 to 61" },
  }
  local offsets = { [1] = 0, [7] = 7, [9] = 8, [10] = 9, [11] = 10, [12] = 11, [19] = 16 }
  for _, c in ipairs(cases) do
    local e = expect_failure(write(dir .. "/hdr", flip(data, c[1])), c[2], "flip at " .. c[1])
    t.eq(e.offset, offsets[c[1]], "offset of the damaged field")
  end
  local v11 = data:sub(1, 6) .. "\11" .. data:sub(8)
  expect_failure(write(dir .. "/v11", v11), "unsupported archive version 1%.11", "1.11")
  local v17 = data:sub(1, 6) .. "\17" .. data:sub(8)
  expect_failure(write(dir .. "/v17", v17), "unsupported archive version 1%.17", "1.17")
  local v200 = data:sub(1, 6) .. "\200" .. data:sub(8)
  expect_failure(write(dir .. "/v200", v200), "unsupported archive version 1%.200", "1.200")
  local level = data:sub(1, 11) .. "\0\77" .. data:sub(14)
  expect_failure(write(dir .. "/lvl", level), "the compression level is 77, not %-1 to 9", "level 77")
  -- 1.15 stores an algorithm byte where 1.14 has the level: the layout
  -- follows the version
  local gen = read_file(fx.gen(dir .. "/g15", 15, "zstd", "rows=10"))
  t.eq(gen:byte(12), 3, "1.15: algorithm byte zstd")
  expect_failure(write(dir .. "/algo", gen:sub(1, 11) .. "\4" .. gen:sub(13)),
    "the compression algorithm is 4, not 0 to 3", "algorithm 4")
  local e = expect_failure(write(dir .. "/algo_t", gen:sub(1, 12) .. "\2" .. gen:sub(14)), "bad sign byte",
    "1.15: the time follows the algorithm byte")
  t.eq(e.offset, 12)
end)

t.test("TOC damage: counts, ids, flags, offsets and string lengths", function()
  local src = dump("default", {})
  local data = read_file(src)
  local s = archive.read(src)
  local toc_at = 11 + 5 + 35 -- header fields before the dbname (1-based 52)
  local p = toc_at + 1
  for _ = 1, 3 do -- skip dbname and the two version strings
    p = p + 5 + string.unpack("<I4", data, p + 1)
  end
  local count_at = p
  -- the TOC count is the Int at count_at; the first entry's dump id follows
  expect_failure(write(dir .. "/toc1", flip(data, count_at, 0x02)), "bad sign byte", "TOC count sign")
  expect_failure(write(dir .. "/toc2", data:sub(1, count_at + 4) .. "\1" .. data:sub(count_at + 6)),
    "the dump id is %-?%d+, not 1 to 2147483647", "negative dump id")
  local had_at = count_at + 10
  expect_failure(write(dir .. "/toc3", data:sub(1, had_at) .. "\7" .. data:sub(had_at + 2)),
    "the data flag is 7, not 0 to 1", "data flag")
  -- the offset flags sit right before each data position; damage the t1 one
  local t1
  for _, tb in ipairs(s.tables) do if tb.name == "t1" then t1 = tb end end
  local le = string.pack("<I8", t1.offset)
  local at = data:find("\2" .. le, count_at, true)
  t.ok(at and at < s.toc_bytes, "found the t1 offset field")
  expect_failure(write(dir .. "/toc4", data:sub(1, at - 1) .. "\9" .. data:sub(at + 1)),
    "unexpected data offset flag 9", "offset flag")
  local moved = data:sub(1, at) .. string.pack("<I8", t1.offset + 1) .. data:sub(at + 9)
  local path5 = write(dir .. "/toc5", moved)
  expect_failure(path5, "entry %d+", "offset")
  local e = t.raises(function() archive.read(path5, { threads = 1 }) end, "the TOC puts this entry's data at byte")
  t.match(tostring(e), "TABLE DATA public%.t1")
  -- a string length made huge: the tag of the first entry
  local first_tag_len = count_at + 5 + 5 + 5 -- id, hadDumper, then tableoid Str
  first_tag_len = first_tag_len + 5 + string.unpack("<I4", data, first_tag_len + 1)
  first_tag_len = first_tag_len + 5 + string.unpack("<I4", data, first_tag_len + 1)
  local huge = data:sub(1, first_tag_len) .. string.pack("<I4", 0x7ffffff0) .. data:sub(first_tag_len + 5)
  expect_failure(write(dir .. "/toc6", huge), "the tag is %d+ bytes long, more than the", "huge string")
end)

t.test("data damage: compressed and uncompressed blocks", function()
  local src = dump("z1", { "-Z1" })
  local data = read_file(src)
  local s = archive.read(src)
  local t1
  for _, tb in ipairs(s.tables) do if tb.name == "t1" then t1 = tb end end
  local chunks = chunks_of(data, t1.offset + 1)
  t.ok(#chunks > 3, "t1 spans several chunks")
  for _, k in ipairs({ 1, 2, #chunks // 2, #chunks }) do
    local c = chunks[k]
    for _, off in ipairs({ 0, 1, c.len // 2, c.len - 1 }) do
      local e = expect_failure(write(dir .. "/bit", flip(data, c.start + off, 0x04)),
        "entry " .. t1.dump_id .. " %(TABLE DATA public%.t1%)", "flip in chunk " .. k .. "+" .. off)
      t.match(tostring(e), "gzip", "names the codec")
    end
  end
  -- a chunk length that runs past the block
  local c = chunks[2]
  expect_failure(write(dir .. "/len", flip(data, c.len_at + 2, 0x40)), "entry " .. t1.dump_id, "chunk length")
  -- a block type and a block id
  expect_failure(write(dir .. "/type", flip(data, t1.offset + 1, 0x08)), "unknown data block type 9", "block type")
  expect_failure(write(dir .. "/bid", flip(data, t1.offset + 3, 0x01)), "dump id", "block id")
  -- trailing garbage after the last block
  expect_failure(write(dir .. "/tail", data .. "x"), "unexpected data after the last data block", "tail")

  local z0 = dump("z0", { "-Z0" })
  local raw = read_file(z0)
  local zs = archive.read(z0)
  local zt
  for _, tb in ipairs(zs.tables) do if tb.name == "t1" then zt = tb end end
  local zc = chunks_of(raw, zt.offset + 1)
  t.eq(#zc, 5001, "uncompressed: one chunk per row plus the end marker")
  local last = zc[#zc]
  t.eq(raw:sub(last.start, last.start + last.len - 1), "\\.\n\n\n")
  expect_failure(write(dir .. "/z0a", flip(raw, last.start + 1, 0x01)), "without its end%-of%-data line",
    "damaged end marker")
  expect_failure(write(dir .. "/z0b", flip(raw, zc[10].len_at + 1, 0x01)), "entry " .. zt.dump_id,
    "uncompressed chunk length")
end)

t.test("lz4 and zstd frames cut at a chunk boundary are caught", function()
  for _, algo in ipairs({ "lz4", "zstd" }) do
    local path = fx.gen(dir .. "/cut_" .. algo, 15, algo, "rows=3000", "chunk=200")
    local data = read_file(path)
    local s = archive.read(path)
    local t1 = s.tables[1]
    local chunks = chunks_of(data, t1.offset + 1)
    -- drop the last chunk but keep the stream's end marker: a clean cut
    local c = chunks[#chunks]
    local cut = data:sub(1, c.len_at - 1) .. data:sub(c.start + c.len)
    local e = expect_failure(write(dir .. "/cutf", cut), "the " .. algo .. " stream is cut off", algo)
    t.match(tostring(e), "TABLE DATA public%.t1")
    -- no checksum in these frames (as pg_dump writes them): damage to the
    -- frame header is what a reader can see
    local bad = flip(data, chunks[1].start, 0x20)
    expect_failure(write(dir .. "/badf", bad), "entry 3363 %(TABLE DATA public%.t1%): " .. algo, algo .. " damage")
  end
end)

t.test("the verifier tap passes bytes unchanged and reports the whole-file summary", function()
  for _, name in ipairs({ "default", "z0", "data_only" }) do
    local path = dumps[name] or dump(name, name == "z0" and { "-Z0" } or name == "data_only" and { "-a" } or {})
    local want = archive.read(path, { list = true })
    local r = stream.run { stream.file_reader(path), archive.verifier { list = true }, stream.sha256(),
      stream.discard() }
    t.eq(r.archive.read.mode, "stream")
    r.archive.read, want.read = nil, nil
    t.eq(r.archive, want, name)
    local direct = stream.run { stream.file_reader(path), stream.sha256(), stream.discard() }
    t.eq(r.sha256.sha256, direct.sha256.sha256, "bytes unchanged")
    t.eq(r.sha256.bytes, #read_file(path))
  end
  local r = stream.run { stream.file_reader(dumps.default), archive.verifier { label = "check" }, stream.discard() }
  t.eq(r.check.complete, true, "label names the report")
end)

t.test("a failed tap still reports what it read", function()
  local data = read_file(dump("default", {}))
  local path = write(dir .. "/tapcut", data:sub(1, #data - 100))
  local ok, e = pcall(stream.run, { stream.file_reader(path), archive.verifier(), stream.discard() })
  t.eq(ok, false)
  t.match(tostring(e), "archive truncated")
  t.eq(e.result.archive.complete, false)
  t.eq(e.result.archive.toc_entries > 0, true)
end)

t.test("misuse and non-files", function()
  t.raises(function() archive.read(dir .. "/missing") end, "cannot open")
  t.raises(function() archive.read(dir) end, "not a regular file")
  t.raises(function() archive.read(dumps.default or dump("default", {}), { threads = 0 }) end, "threads")
  local v = archive.verifier()
  t.match(tostring(v), "^pgvault stage archive")
end)

t.test("fill_offsets turns a pipe-written archive into a seekable one", function()
  local src = dump("default_pipe", {}, true)
  local copy = write(dir .. "/fill.dump", read_file(src))
  local s = archive.read(copy, { fill_offsets = true })
  t.eq(s.offsets, true)
  local again = archive.read(copy, { threads = 2 })
  t.eq(again.offsets, true)
  t.eq(again.read.mode, "parallel", "the filled offsets allow a parallel read")
  t.eq(again.totals, s.totals)
  t.eq(#read_file(copy), #read_file(src), "same size: offsets are fixed-width fields")
  local file_written = read_file(dump("default", {}))
  t.eq(#file_written, #read_file(copy))
  local r = h.run({ fx.bindir() .. "/pg_restore", "-f", "/dev/null", copy })
  t.eq(r.code, 0, r.stderr)

  -- the same from what a tap saw while the bytes were laid down
  local laid = dir .. "/laid.dump"
  local tap = stream.run { stream.file_reader(src), archive.verifier(), stream.file_writer(laid) }
  t.eq(tap.archive.offsets, false)
  t.eq(archive.fill_offsets(laid, tap.archive), #tap.archive.blocks)
  t.eq(read_file(laid), read_file(copy), "the same bytes as the whole-file fill")
  t.eq(archive.fill_offsets(laid, tap.archive), #tap.archive.blocks, "idempotent")
  t.raises(function() archive.fill_offsets(dump("z0", { "-Z0" }), tap.archive) end, "is not an unset data offset")
  t.raises(function() archive.fill_offsets(laid, {}) end, "summary with blocks")
end)

t.test("the fuzz corpus replays cleanly", function()
  local cdir = "tests/fuzz/archive_corpus"
  local names = fs.listdir(cdir)
  t.ok(#names >= 10, "corpus present")
  local ok_count = 0
  for _, name in ipairs(names) do
    local path = cdir .. "/" .. name
    local ok, res = pcall(archive.read, path, { list = true })
    if ok then
      ok_count = ok_count + 1
      t.eq(type(res.list), "string", name)
    else
      t.eq(res.kind, "archive", name .. ": " .. tostring(res))
    end
    local ok2 = pcall(stream.run, { stream.file_reader(path), archive.verifier(), stream.discard() })
    t.eq(ok2, ok, name .. ": the tap agrees")
  end
  t.ok(ok_count >= 6, "the seed archives are valid")
end)

t.teardown(function()
  h.dropdb("archive_test")
  if inserts_url then h.dropdb("archive_inserts") end
end)
