-- covers: bindings/fs.c bindings/fs/ host/file.c
-- pgvault.fs: the file-system helpers scripts rely on.
local t = require "harness.testing"
local h = require "harness.env"
local fs = require "pgvault.fs"

t.test("mkdir_p, stat, listdir, remove_tree", function()
  local d = h.tmpdir()
  fs.mkdir_p(d .. "/a/b/c")
  fs.mkdir_p(d .. "/a/b/c") -- idempotent
  t.eq(fs.stat(d .. "/a/b/c").type, "dir")
  fs.write_file(d .. "/a/z.txt", "z")
  fs.write_file(d .. "/a/m.txt", "m")
  t.eq(fs.listdir(d .. "/a"), { "b", "m.txt", "z.txt" }, "sorted names")
  t.eq(fs.stat(d .. "/a/z.txt").size, 1)
  fs.remove_tree(d .. "/a")
  t.ok(not fs.exists(d .. "/a"))
  local st, err = fs.stat(d .. "/nope")
  t.eq(st, nil)
  t.match(err, "No such file")
end)

t.test("mkdir_p over a file fails clearly", function()
  local d = h.tmpdir()
  fs.write_file(d .. "/f", "")
  t.raises(function() fs.mkdir_p(d .. "/f/sub") end, "f")
end)

t.test("write_file is atomic and honours mode", function()
  local d = h.tmpdir()
  fs.write_file(d .. "/x", "1", { mode = 384 })
  t.eq(fs.stat(d .. "/x").mode, 384)
  t.eq(fs.read_file(d .. "/x"), "1")
  t.eq(fs.listdir(d), { "x" }, "no temporary file left")
  fs.write_file(d .. "/x", "2")
  t.eq(fs.read_file(d .. "/x"), "2", "replaces a regular file by default")
end)

t.test("write_file with no_clobber refuses a taken name with kind 'exists'", function()
  local d = h.tmpdir()
  fs.write_file(d .. "/m", "first", { no_clobber = true })
  local e = t.raises(function() fs.write_file(d .. "/m", "second", { no_clobber = true }) end, "already exists")
  t.eq(e.kind, "exists")
  t.eq(e.path, d .. "/m")
  t.eq(fs.read_file(d .. "/m"), "first")
  t.eq(fs.listdir(d), { "m" })
end)

-- Regression test (issue 11): write_file wrote PATH.partial through a planted link.
t.test("write_file ignores a planted PATH.partial and refuses a link at PATH", function()
  local d, outside = h.tmpdir(), h.tmpdir()
  local proc = require "pgvault.proc"
  fs.write_file(outside .. "/victim", "victim")
  t.eq(proc.run({ "ln", "-s", outside .. "/victim", d .. "/m.partial" }).code, 0)
  fs.write_file(d .. "/m", "data", { mode = 384 })
  t.eq(fs.read_file(outside .. "/victim"), "victim")
  t.eq(fs.read_file(d .. "/m"), "data")
  t.eq(proc.run({ "ln", "-s", outside .. "/victim", d .. "/l" }).code, 0)
  local e = t.raises(function() fs.write_file(d .. "/l", "data") end, "symbolic link")
  t.eq(e.kind, "io")
  t.eq(fs.read_file(outside .. "/victim"), "victim")
end)

t.test("rename refuses to replace anything but a regular file", function()
  local d = h.tmpdir()
  fs.write_file(d .. "/a", "a")
  fs.mkdir_p(d .. "/dir")
  t.raises(function() fs.rename(d .. "/a", d .. "/dir") end, "not a regular file")
  t.raises(function() fs.rename(d .. "/a", "/dev/null") end, "not a regular file")
  fs.write_file(d .. "/b", "b")
  fs.rename(d .. "/a", d .. "/b")
  t.eq(fs.read_file(d .. "/b"), "a")
end)

t.test("read_file of a missing file names it", function()
  local e = t.raises(function() fs.read_file("/nonexistent/file") end, "/nonexistent/file")
  t.eq(e.kind, "io")
  t.eq(e.path, "/nonexistent/file")
end)

t.test("tmpdir, realpath, getcwd, free_space, writable", function()
  local d = fs.tmpdir("unit")
  t.eq(fs.stat(d).type, "dir")
  t.eq(fs.stat(d).mode, 448, "private (0700)")
  t.eq(fs.realpath(d .. "/."), fs.realpath(d))
  t.ok(fs.getcwd():sub(1, 1) == "/")
  t.ok(fs.free_space(d) > 0)
  t.ok(fs.writable(d))
  fs.remove_tree(d)
end)

t.test("lock: taken once; the holder's line is returned to the next; released by close", function()
  local d = h.tmpdir()
  local path = d .. "/x.lock"
  local lk = fs.lock(path, { info = "host=a pid=1" })
  t.ok(lk and lk:held(), "taken")
  t.eq(fs.read_file(path), "host=a pid=1\n", "the holder's line")
  local r = h.pgvault({ "-e", "return fs.lock(...)", path })
  t.eq(r.stdout, "nil\thost=a pid=1\n", "another process finds it taken, and by whom")
  lk:close()
  t.ok(not lk:held())
  t.match(tostring(lk), "released")
  r = h.pgvault({ "-e", "local l = fs.lock(..., { info = 'b' }); return l:held()", path })
  t.eq(r.stdout, "true\n", "free again after close")
  do
    local scoped <close> = fs.lock(path)
    t.ok(scoped:held())
  end
  t.ok(fs.lock(path), "released by <close>")
end)

t.test("lock: the kernel releases it when the holder is killed; wait=true waits for the release", function()
  local proc = require "pgvault.proc"
  local d = h.tmpdir()
  local path = d .. "/x.lock"
  local holder = proc.spawn({ h.bin, "-e", "local l = fs.lock(...); print('held'); io.stdout:flush(); proc.sleep(60)",
    path, stdout = "pipe", stderr = "pipe" })
  t.eq(holder:read_line(10), "held")
  t.eq(fs.lock(path), nil, "taken while the holder lives")
  holder:kill("KILL")
  holder:wait(10)
  holder:close()
  local lk = fs.lock(path)
  t.ok(lk, "free once the holder was killed")
  local marker = d .. "/released"
  local waiter = proc.spawn({ h.bin, "-e", [[
    local path, marker = ...
    print("waiting"); io.stdout:flush()
    local l = fs.lock(path, { wait = true })
    print(l:held(), fs.exists(marker)); io.stdout:flush()]], path, marker, stdout = "pipe", stderr = "pipe" })
  t.eq(waiter:read_line(10), "waiting")
  proc.sleep(0.3)
  h.write(marker, "")
  lk:close()
  t.eq(waiter:read_line(20), "true\ttrue", "it got the lock only after the release")
  t.eq(waiter:wait(10), 0)
  waiter:close()
end)

t.test("lock: Ctrl-C stops a wait; a directory or a bad option is refused", function()
  local proc = require "pgvault.proc"
  local d = h.tmpdir()
  local lk = fs.lock(d .. "/x.lock")
  local waiter = proc.spawn({ h.bin, "-e", "print('waiting'); io.stdout:flush(); fs.lock(..., { wait = true })",
    d .. "/x.lock", stdout = "pipe", stderr = "pipe" })
  t.eq(waiter:read_line(10), "waiting")
  proc.sleep(0.3)
  waiter:kill("INT")
  t.eq(waiter:wait(10), 130, "interrupted")
  waiter:close()
  lk:close()
  t.raises(function() fs.lock(d) end, "cannot")
  t.raises(function() fs.lock(d .. "/y", { wiat = true }) end, "unknown option 'wiat'")
end)
