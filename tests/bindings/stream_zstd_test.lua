-- covers: bindings/stream/zstd.c
-- pgvault.stream's zstd stages: round trips, interoperability with the zstd
-- CLI both ways, concatenated frames, corrupt and truncated input, and the
-- multithreaded compressor in constant memory.
local t = require "harness.testing"
local h = require "harness.env"
local stream = require "pgvault.stream"
local fs = require "pgvault.fs"

-- Incompressible-ish bytes with some structure: a keyed pseudo-random mix.
local function sample(n, seed)
  local parts, x = {}, seed or 1
  for i = 1, n // 8 do
    x = (x * 1103515245 + 12345) % 2147483648
    parts[i] = string.pack("<I4", x) .. (i % 3 == 0 and "row " or string.pack("<I4", x ~ i))
  end
  return table.concat(parts)
end

local function compress(data, opts)
  return stream.run { stream.string(data), stream.zstd(opts), stream.buffer() }
end

local function decompress(data)
  return stream.run { stream.string(data), stream.unzstd(), stream.buffer() }.buffer.data
end

t.test("round trip at several levels and thread counts", function()
  local data = sample(3 * 1024 * 1024)
  for _, o in ipairs({ {}, { level = 1, threads = 1 }, { level = 19, threads = 2, small = true }, { level = -5 } }) do
    -- (level 19 is slow: a smaller input keeps the test quick under valgrind)
    local input = o.small and data:sub(1, 256 * 1024) or data
    o.small = nil
    local r = compress(input, o)
    t.eq(r.zstd.bytes_in, #input, "bytes in")
    t.eq(r.zstd.bytes_out, #r.buffer.data, "bytes out")
    t.eq(r.zstd.level, o.level or 3)
    t.ok(decompress(r.buffer.data) == input, "bytes back unchanged at level " .. tostring(o.level))
  end
  local r = compress("", {})
  t.eq(decompress(r.buffer.data), "", "an empty input is an empty frame")
end)

-- The report's `threads` is only what was asked for; what libzstd really
-- started is counted among the compressing process's threads.
local function threads_while_compressing(threads)
  local proc = require "pgvault.proc"
  local d = h.tmpdir()
  local fifo = d .. "/in"
  t.eq(proc.run({ "mkfifo", fifo }).code, 0)
  local code = string.format("stream.run{ stream.file_reader(%q), stream.zstd{ threads = %d }, stream.discard() }",
    fifo, threads)
  local p = proc.spawn({ h.bin, "-e", code, stdout = "pipe", stderr = "pipe" })
  local w = assert(io.open(fifo, "wb"))
  w:write(sample(2 * 1024 * 1024))
  w:flush()
  local task = "/proc/" .. p:pid() .. "/task"
  local count = 0
  local deadline = proc.now() + 20
  repeat -- until the worker pool exists and the count is steady
    local last = count
    count = #fs.listdir(task)
    proc.sleep(0.1)
  until (count > 1 and count == last) or proc.now() > deadline
  w:close()
  t.eq(p:wait(20), 0, "the pipeline ran")
  p:close()
  return count - 1 -- the main thread
end

t.test("threads=N starts N libzstd workers, threads=0 one per core (counted in /proc/PID/task)", function()
  local cpus = tonumber(h.run({ "nproc" }).stdout)
  t.eq(threads_while_compressing(0), cpus, "threads=0")
  t.eq(threads_while_compressing(1), 1, "threads=1")
  t.eq(threads_while_compressing(3), 3, "threads=3")
  t.eq(compress("x", { threads = 0 }).zstd.threads, cpus, "the report says what was asked for")
end)

t.test("zstd -d reads what we write, and we read what zstd writes", function()
  local d = h.tmpdir()
  local data = sample(2 * 1024 * 1024, 7) .. string.rep("compressible ", 100000)
  h.write(d .. "/plain", data)
  stream.run { stream.file_reader(d .. "/plain"), stream.zstd { level = 3 }, stream.file_writer(d .. "/ours.zst") }
  local r = h.run({ "zstd", "-q", "-d", "-c", d .. "/ours.zst" })
  t.eq(r.code, 0, "zstd -d exit code")
  t.ok(r.stdout == data, "zstd -d gives the original bytes")
  t.eq(h.run({ "zstd", "-q", "-t", d .. "/ours.zst" }).code, 0, "zstd -t: checksums verify")
  t.eq(h.run({ "zstd", "-q", "-T2", "-9", "-o", d .. "/theirs.zst", d .. "/plain" }).code, 0)
  local back = stream.run { stream.file_reader(d .. "/theirs.zst"), stream.unzstd(), stream.sha256(), stream.buffer() }
  t.ok(back.buffer.data == data, "we decompress zstd's output")
end)

t.test("concatenated frames decompress as one stream", function()
  local a, b = sample(300000, 3), sample(200000, 4)
  local za, zb = compress(a).buffer.data, compress(b, { level = 9 }).buffer.data
  t.ok(decompress(za .. zb) == a .. b, "two frames")
  -- a skippable frame between them (magic 0x184D2A50, 4-byte length)
  local skip = string.pack("<I4I4", 0x184D2A50, 5) .. "12345"
  t.ok(decompress(za .. skip .. zb) == a .. b, "skippable frame ignored")
end)

t.test("corrupt input fails clearly and leaves no file", function()
  local d = h.tmpdir()
  local e = t.raises(function()
    stream.run { stream.string("this is not zstd at all"), stream.unzstd(), stream.file_writer(d .. "/out") }
  end, "not valid zstd data %(Unknown frame descriptor%)")
  t.eq(e.kind, "io")
  t.eq(#fs.listdir(d), 0, "no partial file")
  local z = compress(sample(500000, 5)).buffer.data
  local flipped = z:sub(1, 2000) .. string.char(z:byte(2001) ~ 0xff) .. z:sub(2002)
  t.raises(function() decompress(flipped) end, "not valid zstd data")
  t.raises(function() decompress("") end, "empty input: not a zstd stream")
end)

t.test("truncated input is reported as truncated", function()
  local z = compress(sample(800000, 6)).buffer.data
  local e = t.raises(function() decompress(z:sub(1, #z - 100)) end, "zstd data is truncated")
  t.eq(e.kind, "io")
  t.raises(function() decompress(z:sub(1, 3)) end, "truncated")
end)

t.test("misuse is an argument error", function()
  t.raises(function() stream.zstd { level = 99 } end, "zstd level must be")
  t.raises(function() stream.zstd { threads = -1 } end, "threads must be")
end)

t.test("a large stream goes through in bounded memory", function()
  -- 256 MiB through compress (all cores) and decompress in a fresh process:
  -- its peak RSS stays far below the data size (the stages hold chunks only).
  local r = h.pgvault({ "-e", [[
    local s = require "pgvault.stream"
    local block = {}
    for i = 1, 8192 do block[i] = string.pack("<I8", (i * 2654435761) % 4294967296) .. "some text " end
    local piece = table.concat(block) -- ~150 KiB
    local d = os.getenv("TMPDIR") .. "/big"
    local f = assert(io.open(d, "wb"))
    for _ = 1, (256 << 20) // #piece do f:write(piece) end
    f:close()
    block, piece = nil, nil
    collectgarbage()
    local base = tonumber(io.open("/proc/self/status"):read("a"):match("VmRSS:%s*(%d+)"))
    local r = s.run { s.file_reader(d), s.zstd { level = 3 }, s.unzstd(), s.sha256(), s.discard() }
    os.remove(d)
    local hwm = tonumber(io.open("/proc/self/status"):read("a"):match("VmHWM:%s*(%d+)"))
    return r.sha256.bytes, hwm, base]] }, { no_valgrind = true }) -- memcheck's own memory would swamp it
  t.eq(r.code, 0, r.stderr)
  local bytes, hwm, base = r.stdout:match("(%d+)%s+(%d+)%s+(%d+)")
  t.ok(tonumber(bytes) > 250 * 1024 * 1024, "bytes through: " .. tostring(bytes))
  -- What the pipeline added to the process, not the data size (256 MiB).
  -- Under AddressSanitizer freed chunks wait in its quarantine and every
  -- allocation has redzones: a looser bound, still well below the data.
  local limit = h.asan and 160 or 64
  t.ok(tonumber(hwm) - tonumber(base) < limit * 1024,
    "peak RSS " .. hwm .. " kB (" .. base .. " kB before) grew by less than " .. limit .. " MiB")
end)

-- Counts the frames of a .zst file as the zstd CLI sees them.
local function cli_frames(path)
  local r = h.run({ "zstd", "-lv", path })
  return tonumber(r.stdout:match("# Zstandard Frames: (%d+)"))
end

t.test("frame_size writes independent frames (zstd -lv counts them), each decodable, no empty last frame", function()
  local d = h.tmpdir()
  local data = sample(5 * 1024 * 1024 + 12345, 3)
  for _, c in ipairs({ { 1 << 20, 6 }, { 0, 1 }, { 5 * 1024 * 1024 + 12345, 1 } }) do
    local path = string.format("%s/f-%s.zst", d, tostring(c[1]))
    local r = stream.run { stream.string(data), stream.zstd { frame_size = c[1] }, stream.file_writer(path) }
    t.eq(cli_frames(path), c[2], "frames of frame_size " .. tostring(c[1]))
    t.eq(r.zstd.frames, c[2], "the report agrees")
    local back = h.run({ "zstd", "-q", "-d", "-c", path })
    t.ok(back.code == 0 and back.stdout == data, "zstd -d restores it")
    t.ok(decompress(h.read(path)) == data, "unzstd restores it")
  end
  local exact = string.rep("x", 2 << 20)
  local path = d .. "/exact.zst"
  stream.run { stream.string(exact), stream.zstd { frame_size = 1 << 20 }, stream.file_writer(path) }
  t.eq(cli_frames(path), 2, "an input of exactly two frames makes two, not a third empty one")
  t.eq(decompress(compress("", { frame_size = 1 << 20 }).buffer.data), "", "an empty input is one empty frame")
end)

t.test("the default frame is one job per worker, at least 4 MiB: small enough for unzstd's parallel decoder", function()
  local data = sample(9 * 1024 * 1024, 5)
  local cases = { { 1, 1 << 20, 4 << 20 }, { 2, nil, 4 << 20 }, { 4, nil, 8 << 20 }, { 8, 1 << 20, 8 << 20 },
    { 8, nil, 16 << 20 } }
  for _, c in ipairs(cases) do
    local r = stream.run { stream.string(data), stream.zstd { threads = c[1], job_size = c[2] },
      stream.buffer { max = 1 << 30 } }
    local what = string.format("%d workers, jobs of %s", c[1], tostring(c[2] or "2 MiB"))
    t.eq(r.zstd.frame_size, c[3], what)
    t.eq(r.zstd.frames, math.ceil(#data / c[3]), what .. ": frames")
    local back = stream.run { stream.string(r.buffer.data), stream.unzstd { threads = 2 },
      stream.buffer { max = 1 << 30 } }
    t.ok(back.buffer.data == data, what .. ": decodes")
    if c[3] == 4 << 20 then t.eq(back.unzstd.frames_in_parallel, r.zstd.frames, what .. ": every frame in parallel") end
  end
end)

t.test("unknown or wrong options are argument errors", function()
  t.raises(function() stream.zstd { levle = 19 } end, "unknown option 'levle' %(known: level, threads")
  t.raises(function() stream.zstd { frame_size = 100 } end, "frame_size must be 0")
  t.raises(function() stream.zstd { threads = "2" } end, "field 'threads': integer expected, got string")
end)
