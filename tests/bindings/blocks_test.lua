-- covers: bindings/stream/blocks.c
-- stream.block_digests and stream.verify_blocks: the SHA-256 of each block
-- of a stream, and a filter that releases a block only once its digest
-- matched. Bit flips in every block position, truncation, extension, a
-- block boundary exactly at the end, an empty stream; with block sizes
-- smaller than, equal to and larger than the stream's 64 KiB chunks.
local t = require "harness.testing"
local stream = require "pgvault.stream"

local function sha256(data)
  return stream.run({ stream.string(data), stream.sha256(), stream.discard() }).sha256.sha256
end

-- Bytes that differ in every block.
local function data_of(n)
  local parts, i, len = {}, 0, 0
  while len < n do
    i = i + 1
    local p = string.format("%09d|", i) .. string.rep(string.char(33 + i % 90), 53)
    parts[#parts + 1] = p
    len = len + #p
  end
  return table.concat(parts):sub(1, n)
end

local function digests(data, bs)
  return stream.run({ stream.string(data), stream.block_digests { block_size = bs }, stream.discard() }).blocks
end

-- Runs data through verify_blocks; returns ok, the bytes released downstream, the error.
local function verify(data, bs, blocks)
  local ok, res = pcall(stream.run, { stream.string(data),
    stream.verify_blocks { block_size = bs, blocks = blocks, what = "the object" },
    stream.buffer { max = 16 << 20 } })
  if ok then return true, res.buffer.data end
  local released = res.result and res.result.buffer and res.result.buffer.data or ""
  return false, released, res
end

local SIZES = { 1000, 65536, 100000 }

t.test("block_digests: the SHA-256 of each block_size slice, the last one shorter, none for nothing", function()
  for _, bs in ipairs(SIZES) do
    for _, n in ipairs({ 0, 1, bs - 1, bs, bs + 1, 3 * bs, 3 * bs + 17 }) do
      local data = data_of(n)
      local r = digests(data, bs)
      t.eq(r.block_size, bs)
      t.eq(r.bytes, n)
      local want = {}
      for off = 1, n, bs do want[#want + 1] = sha256(data:sub(off, off + bs - 1)) end
      t.eq(r.blocks, want, string.format("digests of %d bytes in blocks of %d", n, bs))
    end
  end
  t.raises(function() stream.block_digests { block_size = 0 } end, "block_size")
  t.raises(function() stream.block_digests {} end, "block_size")
end)

t.test("verify_blocks passes a matching stream unchanged, a boundary exactly at the end and an empty one", function()
  for _, bs in ipairs(SIZES) do
    for _, n in ipairs({ 1, bs, 2 * bs, 3 * bs + 5 }) do
      local data = data_of(n)
      local ok, out, err = verify(data, bs, digests(data, bs).blocks)
      t.ok(ok, string.format("n=%d bs=%d: %s", n, bs, tostring(err)))
      t.eq(out == data, true, "bytes unchanged")
    end
  end
  local ok, out = verify("", 1000, {})
  t.ok(ok, "an empty object has no blocks")
  t.eq(out, "")
  local r = stream.run({ stream.string(data_of(3000)),
    stream.verify_blocks { block_size = 1000, blocks = digests(data_of(3000), 1000).blocks, label = "checked" },
    stream.discard() })
  t.eq(r.checked, { checked = 3, blocks = 3, bytes = 3000 })
end)

t.test("a flipped bit in any block fails at that block, with only the blocks before it released", function()
  for _, bs in ipairs(SIZES) do
    local n = 4 * bs + bs // 2
    local data = data_of(n)
    local blocks = digests(data, bs).blocks
    t.eq(#blocks, 5)
    for b = 0, 4 do
      local first, last = b * bs + 1, math.min((b + 1) * bs, n)
      for _, at in ipairs({ first, first + 1, (first + last) // 2, last }) do
        local bad = data:sub(1, at - 1) .. string.char(data:byte(at) ~ 0x40) .. data:sub(at + 1)
        local ok, released, err = verify(bad, bs, blocks)
        t.eq(ok, false, string.format("flip at byte %d (block %d, bs %d)", at, b, bs))
        t.eq(#released, b * bs, "only the blocks before the damaged one")
        t.eq(released, data:sub(1, b * bs), "and they are authentic")
        t.eq(err.kind, "verify")
        t.eq(err.block, b)
        t.match(tostring(err), "^the object does not match what was recorded: block " .. b .. " %(bytes "
          .. (b * bs) .. " to " .. (last - 1)
          .. "%) differs, so the object was replaced or damaged; none of it was used$")
      end
    end
  end
end)

t.test("truncation at and between block boundaries fails; nothing past the last whole checked block", function()
  for _, bs in ipairs(SIZES) do
    local n = 3 * bs + 10
    local data = data_of(n)
    local blocks = digests(data, bs).blocks
    for _, cut in ipairs({ 0, 1, bs - 1, bs, bs + 1, 2 * bs, 3 * bs, 3 * bs + 9 }) do
      local ok, released, err = verify(data:sub(1, cut), bs, blocks)
      t.eq(ok, false, string.format("cut at %d (bs %d)", cut, bs))
      local whole = cut // bs
      t.eq(#released, whole * bs, "released whole checked blocks only, cut " .. cut)
      t.eq(err.kind, "verify")
      if cut == 3 * bs + 9 then
        t.match(tostring(err), "block 3 .* differs", "a short last block does not match")
      else
        t.match(tostring(err), "^the object ends early: it has " .. cut .. " bytes, but 4 blocks of " .. bs
          .. " bytes were recorded, so it is truncated; none of it was used$")
      end
    end
  end
end)

t.test("extension: a byte beyond the last block is refused before it goes anywhere", function()
  for _, bs in ipairs(SIZES) do
    -- the object ends on a block boundary: the extra data is a block too many
    local data = data_of(2 * bs)
    local ok, released, err = verify(data .. "x", bs, digests(data, bs).blocks)
    t.eq(ok, false)
    t.eq(released, data, "the authentic blocks went through, not the extra byte")
    t.match(tostring(err), "^the object is longer than what was recorded %(2 blocks of " .. bs
      .. " bytes%): data was appended to it")
    -- the object ends inside a block: that block no longer matches
    data = data_of(2 * bs + 3)
    ok, released, err = verify(data .. "xyz", bs, digests(data, bs).blocks)
    t.eq(ok, false)
    t.eq(#released, 2 * bs)
    t.match(tostring(err), "block 2 .* differs")
  end
  local ok, released, err = verify("x", 1000, {})
  t.eq(ok, false, "anything where nothing was recorded")
  t.eq(released, "")
  t.match(tostring(err), "longer than what was recorded %(0 blocks")
  ok, released, err = verify("", 1000, { sha256("x") })
  t.eq(ok, false, "nothing where a block was recorded")
  t.eq(released, "")
  t.match(tostring(err), "ends early")
end)

t.test("blocks in another order, another block size, a kind for the caller; bad arguments", function()
  local data = data_of(3000)
  local blocks = digests(data, 1000).blocks
  local ok, released, err = verify(data, 1000, { blocks[2], blocks[1], blocks[3] })
  t.eq(ok, false, "swapped digests")
  t.eq(released, "")
  t.eq(err.block, 0)
  ok = verify(data, 1500, blocks)
  t.eq(ok, false, "the digests of another block size")
  local r = pcall(stream.run, { stream.string("x"),
    stream.verify_blocks { block_size = 10, blocks = {}, kind = "trust", what = "s3://b/k" }, stream.discard() })
  t.eq(r, false)
  local _, e = pcall(stream.run, { stream.string("x"),
    stream.verify_blocks { block_size = 10, blocks = {}, kind = "trust", what = "s3://b/k" }, stream.discard() })
  t.eq(e.kind, "trust")
  t.match(tostring(e), "^s3://b/k is longer")
  t.raises(function() stream.verify_blocks { block_size = 10, blocks = { "xyz" } } end, "blocks%[1%] is not a SHA%-256")
  t.raises(function() stream.verify_blocks { block_size = 10, blocks = { string.rep("g", 64) } } end, "blocks%[1%]")
  t.raises(function() stream.verify_blocks { block_size = 10 } end, "blocks must be a list")
  t.raises(function() stream.verify_blocks { block_size = (1 << 30) + 1, blocks = {} } end, "block_size")
  t.eq(verify(data, 1000, { blocks[1]:upper(), blocks[2], blocks[3] }), true, "hex in either case")
end)

t.test("a file changed under the filter: what it passes on is what it checked", function()
  -- stream.file_reader gives 256 KiB writes of four 64 KiB blocks. A shell
  -- at the FIFO's other end reads 1 MiB, overwrites the rest of the file in
  -- place, and reads what comes. Bytes a stage is given must not change
  -- under it: had the reader passed on the file's mapping (tried, and
  -- dropped for this), a block checked there and written from there would
  -- reach the FIFO with the new bytes, as would age chunks opened in place.
  -- From read()'s buffer they are the old ones, and the next block fails
  -- its digest.
  local h = require "harness.env"
  local proc = require "pgvault.proc"
  local fs = require "pgvault.fs"
  local d = h.tmpdir()
  local data = data_of(4 << 20)
  fs.write_file(d .. "/backup", data)
  t.eq(proc.run({ "mkfifo", d .. "/fifo" }).code, 0)
  local sh = proc.spawn({ "sh", "-c", [[exec 3<"$1"
    dd bs=65536 count=16 iflag=fullblock <&3 >"$3" 2>/dev/null
    dd if=/dev/zero of="$2" bs=65536 seek=16 count=48 conv=notrunc 2>/dev/null
    cat <&3 >>"$3"]], "sh", d .. "/fifo", d .. "/backup", d .. "/got" })
  local ok, err = pcall(stream.run, { stream.file_reader(d .. "/backup"),
    stream.verify_blocks { block_size = 65536, blocks = digests(data, 65536).blocks, what = "the backup" },
    stream.file_writer(d .. "/fifo") })
  t.eq(sh:wait(20), 0, "the shell ran")
  sh:close()
  t.eq(ok, false, "a changed block fails")
  t.match(tostring(err.message), "differs, so the object was replaced or damaged")
  local got = fs.read_file(d .. "/got")
  t.ok(#got >= 1 << 20 and #got < #data, "the blocks before the change, and no more (" .. #got .. " bytes)")
  t.ok(got == data:sub(1, #got), "every byte passed on is the file's old byte: none of the new ones")
end)
