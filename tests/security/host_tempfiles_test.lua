-- covers: host/file.c bindings/stream/files.c bindings/fs.c
-- Issue 11 "Hostile input": files pgvault writes into a directory it does
-- not own. A pre-created or symlinked NAME.partial (the old temporary name)
-- can neither receive the plaintext nor clobber another file; a symbolic
-- link under the final name is not followed. Regression tests: on the old
-- code decrypt -o and backup wrote through a planted NAME.partial link.
local t = require "harness.testing"
local h = require "harness.env"
local fs = require "pgvault.fs"

local function symlink(target, name)
  t.eq(h.run({ "ln", "-s", target, name }).code, 0, "ln -s " .. name)
end

local function keypair(dir)
  local key = dir .. "/key.txt"
  t.eq(h.run({ "age-keygen", "-o", key }).code, 0)
  return key, h.run({ "age-keygen", "-y", key }).stdout:match("%S+")
end

t.test("decrypt -o: a planted OUT.partial link receives no plaintext, nothing is clobbered", function()
  local d, victim_dir = h.tmpdir(), h.tmpdir()
  local key, pub = keypair(d)
  h.write(d .. "/plain", "the plaintext")
  t.eq(h.pgvault({ "encrypt", "-r", pub, "-o", d .. "/x.age", d .. "/plain" }).code, 0)
  local victim = victim_dir .. "/victim"
  h.write(victim, "victim's bytes")
  local out = d .. "/out"
  symlink(victim, out .. ".partial")
  local r = h.pgvault({ "decrypt", "-i", key, "-o", out, d .. "/x.age" })
  t.eq(r.code, 0, r.stderr)
  t.eq(h.read(victim), "victim's bytes", "the link's target is untouched")
  t.eq(h.read(out), "the plaintext")
  for _, n in ipairs(fs.listdir(d)) do t.no_match(n, "^%..*%.partial$", "no temporary file left") end
end)

t.test("decrypt -o onto a symbolic link is refused, its target untouched", function()
  local d, victim_dir = h.tmpdir(), h.tmpdir()
  local key, pub = keypair(d)
  h.write(d .. "/plain", "the plaintext")
  t.eq(h.pgvault({ "encrypt", "-r", pub, "-o", d .. "/x.age", d .. "/plain" }).code, 0)
  local victim = victim_dir .. "/victim"
  h.write(victim, "victim's bytes")
  symlink(victim, d .. "/out")
  local r = h.pgvault({ "decrypt", "-i", key, "-o", d .. "/out", d .. "/x.age" })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "symbolic link")
  t.eq(h.read(victim), "victim's bytes")
end)

t.test("backup --to DIR: planted NAME.partial links for the coming seconds are never written", function()
  local DB = "host_tempfiles_security_test"
  local url = h.createdb(DB)
  t.teardown(function() h.dropdb(DB) end)
  h.psql(url, "CREATE TABLE t (a int); INSERT INTO t VALUES (1);")
  local d, victim_dir = h.tmpdir(), h.tmpdir()
  local victim = victim_dir .. "/victim"
  h.write(victim, "victim's bytes")
  local now = os.time()
  for s = 0, 30 do
    local stamp = os.date("!%Y%m%d%H%M%S", now + s)
    for _, ext in ipairs({ ".backup.zst", ".backup.zst.manifest.json" }) do
      symlink(victim, string.format("%s/%s_local%s.partial", d, stamp, ext))
    end
  end
  local r = h.pgvault({ "backup", "--db", url, "--to", d })
  t.eq(r.code, 0, r.stderr)
  t.eq(h.read(victim), "victim's bytes", "no planted link was followed")
  local path = r.stdout:match("([^\n]*)\n?$")
  t.ok(fs.stat(path, true).type == "file", "the backup is a regular file: " .. path)
end)
