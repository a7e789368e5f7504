-- covers: bindings/stream/mapped.c bindings/stream/files.c
-- stream.file_reader of a regular file passes its bytes on from the file's
-- mapping, 4 MiB at a time (bindings/stream/mapped.c): the same bytes as
-- read() gives, at every size around the window's and the page's edges;
-- and a file cut short while it is read fails the pipeline with one clear
-- line (where a mapping's default would be SIGBUS, the process killed).
local t = require "harness.testing"
local h = require "harness.env"
local stream = require "pgvault.stream"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"

local MiB = 1 << 20

-- Bytes that differ everywhere (a window passed on twice or out of order
-- changes the digest).
local function bytes(n, seed)
  local parts, x = {}, seed or 7
  for i = 1, (n + 3) // 4 do
    x = (x * 1103515245 + 12345) % 2147483648
    parts[i] = string.pack("<I4", x)
  end
  return table.concat(parts):sub(1, n)
end

local function sha256sum(path)
  return h.run({ "sha256sum", path }).stdout:match("^(%x+)")
end

t.test("a file is read whole and in order, at every size around a window's and a page's edge", function()
  local d = h.tmpdir()
  local sizes = { 1, 4095, 4096, 4097, 4 * MiB - 1, 4 * MiB, 4 * MiB + 1, 9 * MiB + 123 }
  for _, n in ipairs(sizes) do
    local path = d .. "/f" .. n
    fs.write_file(path, bytes(n, n))
    local r = stream.run { stream.file_reader(path, { label = "file" }), stream.sha256(), stream.counter(),
      stream.discard() }
    t.eq(r.sha256.sha256, sha256sum(path), n .. " bytes: the digest sha256sum computes")
    t.eq(r.sha256.bytes, n, n .. " bytes: every byte once")
  end
  -- an empty file: nothing to map, read() says it is empty
  fs.write_file(d .. "/empty", "")
  t.eq(stream.run { stream.file_reader(d .. "/empty"), stream.sha256(), stream.discard() }.sha256.bytes, 0)
end)

t.test("the bytes are the same as through a pipe (read(), not mapped)", function()
  local d = h.tmpdir()
  local path = d .. "/data"
  fs.write_file(path, bytes(6 * MiB + 5, 3))
  local mapped = stream.run { stream.file_reader(path), stream.buffer { max = 64 * MiB } }.buffer.data
  local fifo = d .. "/fifo"
  t.eq(proc.run({ "mkfifo", fifo }).code, 0)
  local cat = proc.spawn({ "sh", "-c", "cat \"$1\" > \"$2\"", "sh", path, fifo })
  local piped = stream.run { stream.file_reader(fifo), stream.buffer { max = 64 * MiB } }.buffer.data
  t.eq(cat:wait(20), 0)
  cat:close()
  t.eq(#mapped, 6 * MiB + 5)
  t.ok(mapped == piped, "the same bytes")
end)

-- A reader of `path` feeding a FIFO whose other end, a shell, reads 1 MiB,
-- cuts the file to `keep` bytes, and then reads the rest. With `apart`, a
-- hand-off between them: the writer to the FIFO writes from the hand-off's
-- copies, and the page that is gone is met by the digest (SIGBUS); without
-- it, by the write to the FIFO itself (EFAULT).
local function cut_while_reading(path, keep, apart)
  local d = h.tmpdir()
  local fifo = d .. "/fifo"
  t.eq(proc.run({ "mkfifo", fifo }).code, 0)
  local sh = proc.spawn({ "sh", "-c", "exec 3<\"$1\"; head -c 1048576 <&3 >/dev/null; truncate -s \"$3\" \"$2\"; "
    .. "cat <&3 >/dev/null", "sh", fifo, path, tostring(keep) })
  local stages = { stream.file_reader(path), stream.sha256() }
  if apart then stages[#stages + 1] = stream.handoff() end
  stages[#stages + 1] = stream.file_writer(fifo)
  local ok, err = pcall(stream.run, stages)
  t.eq(sh:wait(20), 0, "the shell ran")
  sh:close()
  return ok, err
end

t.test("a file cut short while it is read fails the pipeline with one line, not SIGBUS", function()
  local d = h.tmpdir()
  local path = d .. "/backup.zst"
  for _, apart in ipairs({ false, true }) do
    local what = apart and "met by a stage (SIGBUS)" or "met by a system call (EFAULT)"
    fs.write_file(path, bytes(12 * MiB, 5))
    local ok, err = cut_while_reading(path, 4096, apart)
    t.eq(ok, false, what .. ": the pipeline fails")
    t.eq(err.kind, "io", what)
    t.match(err.message, "^cannot read .*backup%.zst: it changed while it was read %(it was cut short near byte "
      .. "%d+%): read it again once nothing is writing it$", what)
    t.eq(err.path, path, what)
  end
  -- the process goes on: the next file is read as usual
  fs.write_file(path, "again")
  t.eq(stream.run { stream.file_reader(path), stream.buffer() }.buffer.data, "again")
end)

t.test("a SIGBUS that is not a window's still ends the process with the signal", function()
  local kill = "require('pgvault.proc').run({ 'kill', '-BUS', tostring(require('pgvault.proc').getpid()) }); "
    .. "require('pgvault.proc').sleep(2); print('survived')"
  local before = h.run({ h.bin, "-e", kill })
  t.ok(before.code ~= 0 and not before.stdout:find("survived"), "before any file was read: the default action")
  local read_first = "local s = require 'pgvault.stream'; s.run { s.file_reader('/etc/hostname'), s.discard() }; "
  local after = h.run({ h.bin, "-e", read_first .. kill })
  t.eq(after.code, before.code, "after a file was read (the guard installed): the same end")
  t.ok(not after.stdout:find("survived"), "not swallowed")
end)
