-- covers: bindings/stream/unzstd_mt.c
-- stream.unzstd{threads = N}: zstd decompression of independent frames on
-- several threads (bindings/stream/unzstd_mt.c). The output is the same as
-- the single-threaded decoder's for every shape of stream (many small
-- frames, one big frame, a mix, skippable and empty frames, a frame that
-- inflates hugely), and damage fails the same way.
local t = require "harness.testing"
local h = require "harness.env"
local stream = require "pgvault.stream"
local archive = require "pgvault.archive"
local fs = require "pgvault.fs"

-- Bytes that compress about 2:1 (or hardly at all with `raw`).
local function noise(n, seed, raw)
  local parts, x = {}, seed or 12345
  for i = 1, n // 4 do
    x = (x * 1103515245 + 12345) % 2147483648
    parts[i] = string.pack("<I4", raw and x or x % 65536)
  end
  return table.concat(parts)
end

-- One frame of `data` (frame_size = 0).
local function zstd(data, level)
  return stream.run { stream.string(data), stream.zstd { level = level or 3, frame_size = 0 },
    stream.buffer { max = 1 << 30 } }.buffer.data
end

local function unzstd(data, threads)
  local r = stream.run { stream.string(data), stream.unzstd { threads = threads }, stream.sha256(),
    stream.buffer { max = 1 << 30 } }
  return r.buffer.data, r.unzstd
end

local function skippable(payload)
  return string.pack("<I4I4", 0x184D2A50, #payload) .. payload
end

-- Frames of the pieces of `data` cut at `sizes` (cycled).
local function frames_of(data, sizes)
  local out, at, k = {}, 1, 0
  while at <= #data do
    k = k + 1
    local n = sizes[(k - 1) % #sizes + 1]
    out[#out + 1] = zstd(data:sub(at, at + n - 1))
    at = at + n
  end
  return table.concat(out), k
end

t.test("independent frames decode in parallel, in order", function()
  local data = noise(12 * 1024 * 1024)
  local z, n = frames_of(data, { 1 << 20, 300000, 2 << 20, 77777 })
  local out, rep = unzstd(z, 2)
  t.ok(out == data, "the same bytes")
  t.eq(rep.frames, n)
  t.eq(rep.frames_in_sequence, 0, "no frame needed the sequential path")
  t.eq(rep.frames_in_parallel, n)
  t.eq(rep.threads, 2)
  local out4 = unzstd(z, 4)
  t.ok(out4 == data, "four threads")
  local out1, rep1 = unzstd(z, 1)
  t.ok(out1 == data, "one thread")
  t.eq({ rep1.threads, rep1.frames, rep1.frames_in_sequence, rep1.frames_in_parallel }, { 1, n, n, 0 },
    "one thread counts the frames too, all in sequence")
end)

t.test("one big frame (every backup written before frame_size) decodes in sequence", function()
  local data = noise(9 * 1024 * 1024, 7, true)
  local out, rep = unzstd(zstd(data, 1), 2)
  t.ok(out == data)
  t.eq(rep.frames, 1)
  t.eq(rep.frames_in_sequence, 1)
end)

t.test("a mix: small frames, a big one, skippable and empty frames, a frame that inflates hugely", function()
  local small = noise(500000, 3)
  local big = noise(10 * 1024 * 1024, 5, true)
  local zeros = string.rep("\0", 20 * 1024 * 1024) -- a few KiB compressed, past a job's output bound
  local z = zstd(small) .. skippable("hello") .. zstd("") .. zstd(big, 1) .. zstd(small) .. skippable("") ..
    zstd(zeros) .. zstd(small)
  local out, rep = unzstd(z, 2)
  t.ok(out == small .. big .. small .. zeros .. small, "the same bytes in the same order")
  t.eq(rep.frames, 8)
  t.eq(rep.frames_in_sequence, 2, "the big frame and the one that inflates")
  t.ok(out == unzstd(z, 1), "as the single-threaded decoder")
end)

-- Both decoders on the same damaged input: both fail, with the same kind
-- of message (with `same`, the very same message).
local function both_fail(z, pattern, what, same)
  local messages = {}
  for _, threads in ipairs({ 1, 2 }) do
    local ok, e = pcall(unzstd, z, threads)
    t.eq(ok, false, what .. " (threads " .. threads .. ")")
    t.eq(e.kind, "io", what)
    t.match(tostring(e), pattern, what .. " (threads " .. threads .. ")")
    messages[threads] = tostring(e)
  end
  if same then t.eq(messages[2], messages[1], what .. ": the same message") end
end

t.test("damage fails as it does on one thread", function()
  local data = noise(6 * 1024 * 1024, 11)
  local z = frames_of(data, { 1 << 20 })
  both_fail(z:sub(1, #z - 3), "zstd data is truncated: input ended inside a frame", "truncated")
  both_fail("", "empty input: not a zstd stream", "empty")
  both_fail(z:sub(1, 3), "zstd data is truncated", "inside the first magic number")
  both_fail("not zstd at all", "not valid zstd data %(Unknown frame descriptor%) near compressed byte 0", "garbage",
    true)
  local mid = #z // 2
  local flipped = z:sub(1, mid - 1) .. string.char(z:byte(mid) ~ 0x55) .. z:sub(mid + 1)
  both_fail(flipped, "not valid zstd data", "a damaged byte in a middle frame")
  -- a reserved block type in a frame's first block header
  local one = zstd(noise(100000))
  local fhd = one:byte(5)
  local hsize = 4 + 1 + ((fhd >> 5) & 1 == 1 and 0 or 1) + ({ 0, 1, 2, 4 })[(fhd & 3) + 1] +
    ({ 0, 2, 4, 8 })[(fhd >> 6) + 1] + (((fhd >> 6) == 0 and (fhd >> 5) & 1 == 1) and 1 or 0)
  local b = hsize + 1
  local bad = one:sub(1, b - 1) .. string.char(one:byte(b) | 0x06) .. one:sub(b + 1)
  -- the walk does not judge a reserved block type: libzstd does, as on one thread
  both_fail(one .. bad, "not valid zstd data", "a reserved block type", true)
  local legacy = string.pack("<I4", 0xFD2FB527) .. "old format"
  both_fail(one .. legacy, "not valid zstd data", "a legacy frame after a good one", true)
end)

t.test("a failure after it stops the workers", function()
  local z = frames_of(noise(8 * 1024 * 1024), { 1 << 20 })
  local ok, e = pcall(stream.run, { stream.string(z), stream.unzstd { threads = 3 }, archive.verifier(),
    stream.discard() })
  t.eq(ok, false)
  t.eq(e.kind, "archive")
end)

t.test("stream.zstd writes a frame every frame_size bytes: every frame decodes on its own", function()
  local data = noise(10 * 1024 * 1024 + 5, 21)
  local z = stream.run { stream.string(data), stream.zstd { frame_size = 1 << 20 }, stream.buffer { max = 1 << 30 } }
    .buffer.data
  local out, rep = unzstd(z, 2)
  t.ok(out == data)
  t.eq(rep.frames, 11, "ten whole frames and the rest")
  t.eq(rep.frames_in_sequence, 0)
  local one = stream.run { stream.string(data), stream.zstd { frame_size = 0 }, stream.buffer { max = 1 << 30 } }
  t.eq(select(2, unzstd(one.buffer.data, 2)).frames, 1, "frame_size = 0: one frame, as before")
  local exact = stream.run { stream.string(string.rep("x", 2 << 20)), stream.zstd { frame_size = 1 << 20 },
    stream.buffer() }.buffer.data
  t.eq(select(2, unzstd(exact, 2)).frames, 2, "no empty frame after the last whole one")
  -- the zstd program reads it, as it reads any stream of frames
  local path = h.tmpdir() .. "/frames.zst"
  fs.write_file(path, z)
  local r = h.run({ "sh", "-c", "zstd -qdc '" .. path .. "' | sha256sum" })
  local want = stream.run { stream.string(data), stream.sha256(), stream.discard() }.sha256.sha256
  t.eq(r.stdout:match("^(%x+)"), want, "zstd -d gives the same bytes")
  t.raises(function() stream.zstd { frame_size = 1000 } end, "frame_size must be 0")
end)

-- Threads of a pgvault decoding from a FIFO (the main thread left out),
-- counted in /proc/PID/task once the count is steady.
local function threads_while_decoding(threads)
  local proc = require "pgvault.proc"
  local fifo = h.tmpdir() .. "/in.zst"
  t.eq(proc.run({ "mkfifo", fifo }).code, 0)
  local code = string.format("stream.run{ stream.file_reader(%q), stream.unzstd{ threads = %d }, stream.discard() }",
    fifo, threads)
  local p = proc.spawn({ h.bin, "-e", code, stdout = "pipe", stderr = "pipe" })
  local w = assert(io.open(fifo, "wb"))
  w:write(zstd(noise(64 * 1024, 3)):sub(1, 1000)) -- a frame begun: the stage has started
  w:flush()
  local count, deadline = 0, proc.now() + 20
  repeat
    local last = count
    count = #fs.listdir("/proc/" .. p:pid() .. "/task")
    proc.sleep(0.1)
  until (count > 1 and count == last) or proc.now() > deadline
  w:close()
  p:wait(20)
  p:close()
  return count - 1
end

t.test("N threads decode: N - 1 workers and the writer's thread, which decodes the jobs nobody has taken", function()
  t.eq(threads_while_decoding(2), 1, "threads = 2: one worker")
  t.eq(threads_while_decoding(4), 3, "threads = 4: three workers")
  -- 24 frames of 1 MiB: the writer gathers jobs faster than one worker
  -- decodes them, so instead of waiting for the next in order it decodes
  -- some itself
  local data = string.rep(noise(1 << 20, 11), 24)
  local z = stream.run { stream.string(data), stream.zstd { frame_size = 1 << 20 }, stream.buffer { max = 1 << 30 } }
    .buffer.data
  local out, rep = unzstd(z, 2)
  t.ok(out == data, "the same bytes, in order")
  t.eq(rep.frames_in_parallel, 24)
  t.ok(math.type(rep.jobs_on_writer) == "integer" and rep.jobs_on_writer <= 24, "jobs_on_writer reported")
  -- valgrind runs one thread at a time, and its scheduler decides who
  -- finds a job queued: there the worker may well take every one
  if not h.valgrind then t.ok(rep.jobs_on_writer > 0, "the writer decoded jobs too (" .. rep.jobs_on_writer .. ")") end
end)

t.test("older backups' 16 MiB frames that compress hugely: fewer jobs at a time, not 16 MiB for each", function()
  local d = h.tmpdir()
  local line = "row text 12345 some more words here, and a number 67890"
  t.eq(h.run({ "sh", "-c", "yes \"$1\" | head -c 218103808 > \"$2\"", "sh", line, d .. "/plain" }).code, 0)
  stream.run { stream.file_reader(d .. "/plain"), stream.zstd { frame_size = 16 << 20 },
    stream.file_writer(d .. "/old.zst") }
  local code = string.format([[local s = require "pgvault.stream"
    local r = s.run { s.file_reader(%q), s.unzstd { threads = 2 }, s.sha256(), s.discard() }
    local hwm = io.open("/proc/self/status"):read("a"):match("VmHWM:%%s*(%%d+)")
    print(r.sha256.sha256, r.unzstd.frames_in_parallel, r.unzstd.job_out_max, hwm)]], d .. "/old.zst")
  local r = h.run({ h.bin, "-e", code })
  t.eq(r.code, 0, r.stderr)
  local sha, parallel, out_max, hwm = r.stdout:match("^(%x+)\t(%d+)\t(%d+)\t(%d+)")
  t.eq(sha, h.run({ "sha256sum", d .. "/plain" }).stdout:match("^(%x+)"), "the same bytes")
  t.eq(tonumber(parallel), 13, "every frame decoded in parallel")
  t.eq(tonumber(out_max), 16 << 20, "jobs of a 16 MiB frame each")
  -- six slots of 16 MiB each would be ~110 MiB; the budget of 24 MiB out
  -- lets two such jobs out at a time, and gives back their pages after
  t.ok(tonumber(hwm) < 64 * 1024, "peak RSS " .. hwm .. " KiB < 64 MiB")
end)

t.test("the fuzz corpus replays: one thread and three agree on every input", function()
  local cdir = "tests/fuzz/unzstd_corpus"
  local names = fs.listdir(cdir)
  t.ok(#names >= 7, "corpus present")
  for _, name in ipairs(names) do
    local data = fs.read_file(cdir .. "/" .. name)
    local ok1, a = pcall(unzstd, data, 1)
    local ok3, b = pcall(unzstd, data, 3)
    t.eq(ok3, ok1, name)
    if ok1 then t.ok(a == b, name .. ": the same output") else t.eq(b.kind, "io", name) end
  end
end)

t.test("misuse", function()
  t.raises(function() stream.unzstd { threads = -1 } end, "threads must be 0..64")
  t.raises(function() stream.unzstd { thread = 2 } end, "unknown option 'thread' %(known: threads, label%)")
  t.match(tostring(stream.unzstd { threads = 2 }), "^pgvault stage unzstd")
end)

t.test("data that compresses hugely still decodes in parallel, in jobs of about 4 MiB out", function()
  -- 48 MiB in frames of 4 MiB (stream.zstd's default on two cores) that
  -- compress far better than 16:1: a job gathered to 1 MiB compressed
  -- would hold every frame and decode past its 16 MiB bound (on the old
  -- code: in sequence, after four 16 MiB buffers had been written).
  local line = "0123456789abcdef0123456789abcdef 42 2026-12-01 some text\n"
  local data = string.rep(line, (48 << 20) // #line)
  local z, n = frames_of(data, { 4 << 20 })
  t.ok(#z < (1 << 20), "the stream is under a job's compressed target: " .. #z)
  local out, rep = unzstd(z, 2)
  t.ok(out == data, "the same bytes")
  t.eq(rep.frames, n)
  t.eq(rep.frames_in_sequence, 0, "no frame needed the sequential path")
  t.ok(rep.job_out_max <= (8 << 20), "a job's output stays near 4 MiB: " .. rep.job_out_max)
end)
