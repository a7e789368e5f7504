-- covers: bindings/stream.c bindings/stream/files.c bindings/stream/memory.c bindings/stream/taps.c
-- covers: host/pipeline.c host/stage.c host/file.c host/options.c host/io.c
-- pgvault.stream: the engine's contract (start/run/finish/abort, reports,
-- single use) and the generic stages, files above all: atomic commit, no
-- partial file on failure, devices and FIFOs written through, not replaced.
local t = require "harness.testing"
local h = require "harness.env"
local stream = require "pgvault.stream"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"

local function sha256_of(data)
  local r = stream.run { stream.string(data), stream.sha256(), stream.discard() }
  return r.sha256.sha256
end

t.test("string to buffer, with the SHA-256 of known vectors", function()
  t.eq(sha256_of(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "empty")
  t.eq(sha256_of("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "abc")
  local r = stream.run { stream.string("hello"), stream.buffer() }
  t.eq(r.buffer.data, "hello")
  t.eq(r.bytes, 5)
  t.eq(r.ok, true)
end)

t.test("reports are keyed by label and listed in order", function()
  local r = stream.run { stream.string("x"), stream.sha256 { label = "plain" }, stream.counter(),
    stream.sha256 { label = "stored" }, stream.discard() }
  t.eq(r.plain.bytes, 1)
  t.eq(r.stored.sha256, r.plain.sha256)
  t.eq(r.counter.bytes, 1)
  t.eq(#r.stages, 5)
  t.eq(r.stages[1], false, "the string source reports nothing")
  t.eq(r.stages[2], r.plain)
end)

t.test("a large input streams in constant memory chunks", function()
  local data = string.rep("0123456789abcdef", 1 << 16) -- 1 MiB
  local r = stream.run { stream.string(data), stream.counter(), stream.buffer() }
  t.eq(r.counter.bytes, #data)
  t.eq(r.buffer.data == data, true, "bytes unchanged")
end)

t.test("a stage runs in one pipeline only", function()
  local src, sink = stream.string("a"), stream.discard()
  stream.run { src, sink }
  t.raises(function() stream.run { src, stream.discard() } end, "already used")
  t.match(tostring(src), "^pgvault stage string")
end)

t.test("misuse is reported as argument errors", function()
  t.raises(function() stream.run {} end, "source and a sink")
  t.raises(function() stream.run { stream.discard(), stream.discard() } end, "cannot be a source")
  t.raises(function() stream.run { stream.string("a"), stream.string("b") } end, "cannot take input")
  local s = stream.discard()
  t.raises(function() stream.run { stream.string("a"), s, s } end, "twice")
end)

t.test("file writer commits atomically with mode 0600 by default", function()
  local d = h.tmpdir()
  local path = d .. "/out.bin"
  local r = stream.run { stream.string("payload"), stream.file_writer(path) }
  t.eq(r.file.committed, true)
  t.eq(h.read(path), "payload")
  t.eq(fs.stat(path).mode, 384, "mode 0600")
  t.eq(fs.listdir(d), { "out.bin" }, "no temporary file left")
  stream.run { stream.string("again"), stream.file_writer(path, { mode = 420 }) }
  t.eq(h.read(path), "again", "overwrites by default")
  t.eq(fs.stat(path).mode, 420, "mode option")
end)

t.test("file writer with no_clobber refuses an existing file and keeps it", function()
  local d = h.tmpdir()
  local path = d .. "/keep"
  h.write(path, "original")
  local e = t.raises(function()
    stream.run { stream.string("new"), stream.file_writer(path, { no_clobber = true }) }
  end, "already exists")
  t.eq(e.kind, "exists")
  t.eq(e.path, path)
  t.eq(h.read(path), "original")
  t.eq(fs.listdir(d), { "keep" }, "no temporary file left")
end)

t.test("a failing source leaves nothing under the final name", function()
  local d = h.tmpdir()
  local path = d .. "/never"
  local e = t.raises(function()
    stream.run { stream.file_reader(d .. "/missing"), stream.file_writer(path) }
  end, "cannot open .*missing")
  t.eq(e.kind, "io")
  t.eq(e.path, d .. "/missing")
  t.ok(not fs.exists(path), "no file")
  t.ok(not fs.exists(path .. ".partial"), "no partial")
end)

t.test("a sink failing midway (buffer limit) aborts the file too", function()
  local d = h.tmpdir()
  local e = t.raises(function()
    stream.run { stream.string(string.rep("x", 10000)), stream.buffer { max = 100 } }
  end, "limit")
  t.ok(e.result, "the error carries what the stages saw")
  t.eq(#fs.listdir(d), 0)
end)

t.test("/dev/null is written through, never renamed over", function()
  local before = fs.stat("/dev/null")
  stream.run { stream.string("discarded"), stream.file_writer("/dev/null") }
  local after = fs.stat("/dev/null")
  t.eq(after.type, "chardev", "/dev/null is still a device")
  t.eq(before.type, "chardev")
  t.ok(not fs.exists("/dev/null.partial"), "no /dev/null.partial")
  fs.write_file("/dev/null", "also fine")
  t.eq(fs.stat("/dev/null").type, "chardev", "fs.write_file writes devices through too")
end)

t.test("a FIFO sink is written through", function()
  local d = h.tmpdir()
  local fifo = d .. "/pipe"
  t.eq(proc.run({ "mkfifo", fifo }).code, 0)
  local reader = proc.spawn({ "sh", "-c", "cat " .. fifo .. " > " .. d .. "/got", stdout = "inherit" })
  stream.run { stream.string("through the fifo"), stream.file_writer(fifo) }
  t.eq(reader:wait(10), 0)
  t.eq(h.read(d .. "/got"), "through the fifo")
  t.eq(fs.stat(fifo).type, "fifo", "still a FIFO")
end)

t.test("reading a directory or a missing file fails clearly", function()
  local d = h.tmpdir()
  t.raises(function() stream.run { stream.file_reader(d), stream.discard() } end, "is a directory")
  t.raises(function() stream.run { stream.string("x"), stream.file_writer(d) } end, "is a directory")
end)

t.test("a read-only directory fails with the path and no debris", function()
  local ro = h.mount_tmpfs("1m", { ro = true })
  local e = t.raises(function()
    stream.run { stream.string("x"), stream.file_writer(ro .. "/out") }
  end, "cannot create .*Read%-only file system")
  t.eq(e.kind, "io")
  t.eq(e.path, ro .. "/out")
  t.eq(#fs.listdir(ro), 0)
end)

t.test("a full disk fails the pipeline and removes the partial file", function()
  local small = h.mount_tmpfs("1m")
  local e = t.raises(function()
    stream.run { stream.string(string.rep("x", 3 * 1024 * 1024)), stream.file_writer(small .. "/big") }
  end, "No space left on device")
  t.eq(e.kind, "io")
  t.eq(#fs.listdir(small), 0, "no file, no partial file")
end)

t.test("stdin and stdout stages through a child pgvault", function()
  local r = h.pgvault({ "-e", "local s = require 'pgvault.stream'; s.run{ s.stdin(), s.sha256(), s.stdout() }" },
    { stdin = "round trip" })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, "round trip")
end)

-- Regression tests (issue 11, "Hostile input"): the file writer used to write
-- NAME.partial with O_CREAT|O_TRUNC, following a planted symbolic link.

t.test("a planted NAME.partial (file or symlink) neither receives the bytes nor is clobbered", function()
  local d, outside = h.tmpdir(), h.tmpdir()
  local victim = outside .. "/victim"
  h.write(victim, "victim's own bytes")
  local path = d .. "/backup.bin"
  t.eq(proc.run({ "ln", "-s", victim, path .. ".partial" }).code, 0)
  stream.run { stream.string("secret plaintext"), stream.file_writer(path) }
  t.eq(h.read(victim), "victim's own bytes", "the link's target is untouched")
  t.eq(h.read(path), "secret plaintext")
  t.eq(fs.stat(path .. ".partial", true).type, "link", "the planted link is left alone")
  fs.remove(path .. ".partial")
  h.write(path .. ".partial", "planted")
  stream.run { stream.string("second"), stream.file_writer(path .. "2", { no_clobber = true }) }
  t.eq(h.read(path .. ".partial"), "planted")
end)

t.test("a symbolic link at the final name is refused, its target untouched", function()
  local d, outside = h.tmpdir(), h.tmpdir()
  local victim = outside .. "/victim"
  h.write(victim, "victim")
  local path = d .. "/out"
  t.eq(proc.run({ "ln", "-s", victim, path }).code, 0)
  local e = t.raises(function() stream.run { stream.string("x"), stream.file_writer(path) } end,
    "symbolic link")
  t.eq(e.kind, "io")
  e = t.raises(function() stream.run { stream.string("x"), stream.file_writer(path, { no_clobber = true }) } end,
    "already exists")
  t.eq(e.kind, "exists")
  t.eq(h.read(victim), "victim")
  t.eq(fs.stat(path, true).type, "link")
  t.eq(fs.listdir(d), { "out" }, "no temporary file left")
  -- a link to a device (as /dev/stdout is) is written through
  t.eq(proc.run({ "ln", "-s", "/dev/null", d .. "/null" }).code, 0)
  stream.run { stream.string("x"), stream.file_writer(d .. "/null") }
  t.eq(fs.stat(d .. "/null", true).type, "link")
end)

-- Starts a pgvault that copies a FIFO into `path` with no_clobber; returns
-- it and a function that opens the FIFO for writing (open every FIFO only
-- after starting every process: io.open's descriptors are inherited).
local function fifo_writer(d, name, path)
  local fifo = d .. "/" .. name .. ".fifo"
  t.eq(proc.run({ "mkfifo", fifo }).code, 0)
  local code = string.format([[
    local s = require "pgvault.stream"
    local ok, e = pcall(s.run, { s.file_reader(%q), s.file_writer(%q, { no_clobber = true }) })
    io.stdout:write(ok and "committed\n" or (e.kind .. ": " .. tostring(e) .. "\n"))]], fifo, path)
  local p = proc.spawn({ h.bin, "-e", code, stdout = "pipe", stderr = "inherit" })
  return p, function() return assert(io.open(fifo, "w")) end
end

local function temp_files(d)
  local out = {}
  for _, n in ipairs(fs.listdir(d)) do
    if n:match("^%.") then out[#out + 1] = n end
  end
  return out
end

t.test("two writers of one name with no_clobber: one wins, the other gets 'exists', no mixing", function()
  local d, pipes = h.tmpdir(), h.tmpdir()
  local path = d .. "/same.backup"
  local a, open_a = fifo_writer(pipes, "a", path)
  local b, open_b = fifo_writer(pipes, "b", path)
  local wa, wb = open_a(), open_b()
  wa:write(string.rep("A", 100000)); wa:flush()
  wb:write(string.rep("B", 100000)); wb:flush()
  local deadline = proc.now() + 10
  while #temp_files(d) < 2 and proc.now() < deadline do proc.sleep(0.05) end
  local temps = temp_files(d)
  t.eq(#temps, 2, "each writer has its own temporary file")
  for _, n in ipairs(temps) do
    t.match(n, "^%.same%.backup%.%x+%.partial$", "temporary name")
    t.eq(fs.stat(d .. "/" .. n).mode, 384, "private while written")
  end
  wa:write(string.rep("A", 100)); wa:close()
  t.eq(a:read_line(10), "committed", "the first to finish wins")
  wb:write(string.rep("B", 100)); wb:close()
  t.match(b:read_line(10), "^exists: .*already exists", "the second gets 'exists'")
  a:wait(10); b:wait(10); a:close(); b:close()
  t.ok(h.read(path) == string.rep("A", 100100), "the file holds the winner's bytes only")
  t.eq(fs.listdir(d), { "same.backup" }, "the loser's temporary file is gone")
end)

t.test("a long name still gets a valid temporary name", function()
  local d = h.tmpdir()
  local name = string.rep("é", 120) .. ".backup" -- 247 bytes
  stream.run { stream.string("x"), stream.file_writer(d .. "/" .. name) }
  t.eq(h.read(d .. "/" .. name), "x")
end)

t.test("options of the wrong type are argument errors naming the function and field", function()
  t.raises(function() stream.file_writer("/tmp/x", { mode = "0600" }) end,
    "bad argument #2 to 'file_writer' %(field 'mode': integer expected, got string%)")
  t.raises(function() stream.file_writer("/tmp/x", { no_clobber = "yes" }) end,
    "bad argument #2 to 'file_writer' %(field 'no_clobber': boolean expected, got string%)")
  t.raises(function() stream.file_writer("/tmp/x", "0600") end, "bad argument #2 to 'file_writer' %(table")
  t.raises(function() stream.file_writer("/tmp/x", { label = 7 }) end, "field 'label': string expected, got number")
  t.raises(function() stream.buffer { max = 1.5 } end, "field 'max': number has no integer representation")
end)

t.test("file_reader and stdin emit a prefix (bytes already read) before the rest, once", function()
  local d = h.tmpdir()
  local fifo = d .. "/pipe"
  t.eq(proc.run({ "mkfifo", fifo }).code, 0)
  -- the writer keeps the FIFO open while the pipeline opens it again
  local writer = proc.spawn({ "sh", "-c", "exec > " .. fifo .. "; printf 'HEAD|'; sleep 0.5; printf 'tail'",
    stdout = "inherit" })
  local f = assert(io.open(fifo, "rb"))
  f:setvbuf("no")
  local head = f:read(5) -- from a FIFO: these bytes are gone from it
  local r = stream.run { stream.file_reader(fifo, { prefix = head }), stream.buffer() }
  f:close()
  writer:wait(10)
  writer:close()
  t.eq(r.buffer.data, "HEAD|tail")
  r = h.pgvault({ "-e", "io.stdin:setvbuf('no'); stream.run{ stream.stdin{ prefix = io.read(3) }, stream.stdout() }" },
    { stdin = "abcdef" })
  t.eq(r.stdout, "abcdef", r.stderr)
  t.raises(function() stream.file_reader(fifo, { prefix = 5 }) end, "field 'prefix': string expected")
end)

t.test("sha256{expect=, bytes=, what=} fails a wrong digest or size before the sink commits", function()
  local d = h.tmpdir()
  local good = sha256_of("payload")
  local r = stream.run { stream.string("payload"), stream.sha256 { expect = good:upper(), bytes = 7 },
    stream.file_writer(d .. "/ok") }
  t.eq(r.sha256.sha256, good, "a match passes (case does not matter)")
  local e = t.raises(function()
    stream.run { stream.string("payload"), stream.sha256 { expect = string.rep("0", 64), what = "s3://b/k" },
      stream.file_writer(d .. "/bad") }
  end, "^s3://b/k has SHA%-256 " .. good .. " but its manifest says 0+$")
  t.eq(e.kind, "verify")
  t.ok(not fs.exists(d .. "/bad"), "nothing committed")
  e = t.raises(function()
    stream.run { stream.string("payload"), stream.sha256 { expect = good, bytes = 8 }, stream.discard() }
  end, "^the data has 7 bytes but its manifest says 8$")
  t.eq(e.kind, "verify")
  t.raises(function() stream.sha256 { expect = "abc" } end, "field 'expect': 64 hexadecimal digits")
  t.raises(function() stream.sha256 { expected = good } end, "unknown option 'expected' %(known: expect, bytes")
end)

t.test("every stage refuses an unknown option, naming the known ones", function()
  t.raises(function() stream.file_writer("/tmp/x", { no_clober = true }) end,
    "bad argument #2 to 'file_writer' %(unknown option 'no_clober' %(known: mode, no_clobber, label%)%)")
  t.raises(function() stream.file_reader("/tmp/x", { prefx = "" }) end, "unknown option 'prefx'")
  t.raises(function() stream.buffer { maxx = 1 } end, "unknown option 'maxx'")
  t.raises(function() stream.progress { intervall = 1 } end, "unknown option 'intervall'")
  t.raises(function() require("pgvault.proc").run { "true", time_out = 1 } end, "unknown option 'time_out'")
end)
