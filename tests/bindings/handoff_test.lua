-- covers: bindings/stream/handoff.c
-- stream.handoff: the thread boundary of a pipeline (bindings/stream/handoff.c).
-- Bytes cross it unchanged and in order whatever the sizes; a failure on
-- either side fails the pipeline with that side's error and stops the
-- other; memory is the ring it was given.
local t = require "harness.testing"
local h = require "harness.env"
local stream = require "pgvault.stream"
local archive = require "pgvault.archive"
local fs = require "pgvault.fs"

local dir = h.tmpdir()

-- Deterministic bytes that do not repeat with any small period.
local function noise(n)
  local parts, x = {}, 12345
  for i = 1, n // 4 do
    x = (x * 1103515245 + 12345) % 2147483648
    parts[i] = string.pack("<I4", x)
  end
  return table.concat(parts)
end

t.test("the default ring is 32 buffers of 64 KiB (2 MiB): small hand-overs, bounded memory", function()
  local data = noise(300 * 1024)
  local r = stream.run { stream.string(data), stream.handoff(), stream.buffer { max = #data } }
  t.ok(r.buffer.data == data, "the same bytes")
  t.eq(r.handoff.buffers, 32)
  t.eq(r.handoff.size, 65536)
end)

t.test("bytes cross unchanged and in order, whatever the buffer and write sizes", function()
  local data = noise(3 * 1024 * 1024 + 4)
  local direct = stream.run { stream.string(data), stream.sha256(), stream.discard() }
  for _, c in ipairs({ { 2, 4096 }, { 3, 5000 }, { 4, 1 << 20 }, { 64, 65536 } }) do
    local r = stream.run { stream.string(data), stream.handoff { buffers = c[1], size = c[2] }, stream.sha256(),
      stream.buffer { max = #data } }
    t.eq(r.sha256.sha256, direct.sha256.sha256, "buffers " .. c[1] .. " of " .. c[2])
    t.ok(r.buffer.data == data, "the same bytes")
    t.eq(r.handoff.bytes, #data)
    t.eq(r.handoff.buffers, c[1])
    t.eq(r.handoff.size, c[2])
  end
  -- an empty input and a chain of two hand-offs
  local r = stream.run { stream.string(""), stream.handoff(), stream.sha256(), stream.discard() }
  t.eq(r.sha256.bytes, 0)
  r = stream.run { stream.string(data), stream.handoff { size = 4096 }, stream.sha256 { label = "a" },
    stream.handoff { size = 8192, buffers = 2 }, stream.sha256 { label = "b" }, stream.discard() }
  t.eq(r.a.sha256, direct.sha256.sha256)
  t.eq(r.b.sha256, direct.sha256.sha256)
end)

t.test("the thread is woken for a quarter of the ring at a time, not for each buffer", function()
  -- 16 MiB in 256 buffers of 64 KiB: each time the thread found the ring
  -- empty it slept until 8 were full (or the end), whichever side was
  -- faster; before, it was woken for every buffer (about 250 wake-ups
  -- when the writer is the slower side, as a decompressor is).
  local data = noise(16 * 1024 * 1024)
  for _, c in ipairs({ { 32, 8 }, { 8, 2 }, { 2, 1 } }) do
    local r = stream.run { stream.string(data), stream.handoff { buffers = c[1], size = 65536 }, stream.sha256(),
      stream.discard() }
    local published = #data // 65536
    t.eq(r.sha256.bytes, #data, "buffers " .. c[1])
    t.ok(r.handoff.wakeups <= published // c[2] + 1, string.format("buffers %d: %d wake-ups for %d buffers",
      c[1], r.handoff.wakeups, published))
  end
  -- a slow side after it (the writer sleeps until a quarter of the ring
  -- is free): every byte still arrives, in order
  local direct = stream.run { stream.string(data), stream.sha256(), stream.discard() }
  local r = stream.run { stream.string(data), stream.handoff { buffers = 4, size = 4096 }, stream.sha256(),
    stream.zstd { level = 9, threads = 1 }, stream.discard() }
  t.eq(r.sha256.sha256, direct.sha256.sha256)
end)

t.test("a failure after the hand-off fails the pipeline with its own error and stops the writer", function()
  local data = "PGDMP" .. noise(8 * 1024 * 1024)
  local ok, e = pcall(stream.run, { stream.string(data), stream.handoff { buffers = 2, size = 65536 },
    archive.verifier(), stream.discard() })
  t.eq(ok, false)
  t.eq(e.kind, "archive")
  t.match(tostring(e), "invalid archive at byte")
  -- the writer stopped at most a ring's worth past the failure, not at the end
  t.ok(e.result.bytes < 1024 * 1024, "the source stopped early: " .. e.result.bytes)
end)

t.test("a failure before the hand-off aborts what follows it: no file is left", function()
  local good = stream.run { stream.string(noise(1 << 20)), stream.zstd(), stream.buffer() }.buffer.data
  local bad = good:sub(1, #good // 2) .. string.rep("\255", 64) .. good:sub(#good // 2 + 65)
  local out = dir .. "/out.bin"
  local ok, e = pcall(stream.run, { stream.string(bad), stream.unzstd(), stream.handoff { size = 4096 },
    stream.file_writer(out) })
  t.eq(ok, false)
  t.match(tostring(e), "not valid zstd data")
  t.eq(fs.exists(out), false, "the file writer after the hand-off was aborted")
  t.eq(#fs.listdir(dir), 0, "no temporary file either")
end)

t.test("misuse", function()
  t.raises(function() stream.handoff { buffers = 1 } end, "buffers must be 2 to 64")
  t.raises(function() stream.handoff { size = 10 } end, "size must be 4 KiB to 64 MiB")
  t.match(tostring(stream.handoff()), "^pgvault stage handoff")
end)
