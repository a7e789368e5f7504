-- covers: scripts/decrypt.lua
-- pgvault decrypt: files the age CLI encrypts (X25519, several recipients,
-- armored, passphrases typed at age's prompt), -o written whole or not at
-- all, /dev/null and FIFOs written through, clear errors on tampering.
local t = require "harness.testing"
local h = require "harness.env"
local tty = require "harness.tty"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"

local SIZES = { 0, 1, 65535, 65536, 65537, 131072, 3 * 1024 * 1024 + 7 }

local function data_file(dir, n)
  local path = string.format("%s/plain-%d", dir, n)
  assert(h.run({ "sh", "-c", string.format("head -c %d /dev/urandom > %s", n, path) }).code == 0)
  return path
end

local function keypair(dir, name)
  local path = dir .. "/" .. name
  assert(h.run({ "age-keygen", "-o", path }).code == 0)
  return path, h.run({ "age-keygen", "-y", path }).stdout:match("%S+")
end

t.test("pgvault decrypt opens what age encrypts, at every chunk boundary size, binary and armored", function()
  local d = h.tmpdir()
  local key, pub = keypair(d, "k.txt")
  for _, n in ipairs(SIZES) do
    local plain = data_file(d, n)
    for _, armor in ipairs({ false, true }) do
      local enc = plain .. (armor and ".asc" or ".age")
      local argv = { "age", "-r", pub, "-o", enc, plain }
      if armor then table.insert(argv, 2, "-a") end
      t.eq(h.run(argv).code, 0)
      local r = h.pgvault({ "decrypt", "-i", key, "-o", plain .. ".out", enc })
      t.eq(r.code, 0, r.stderr)
      t.eq(h.read(plain .. ".out") == h.read(plain), true, string.format("n=%d armor=%s", n, tostring(armor)))
    end
  end
end)

t.test("several recipients: any one identity opens age's file; stdin to stdout", function()
  local d = h.tmpdir()
  local k1, p1 = keypair(d, "k1.txt")
  local k2, p2 = keypair(d, "k2.txt")
  local k3 = keypair(d, "k3.txt")
  local plain = data_file(d, 65537)
  t.eq(h.run({ "age", "-r", p1, "-r", p2, "-o", d .. "/m.age", plain }).code, 0)
  for _, k in ipairs({ k1, k2 }) do
    local r = h.pgvault({ "decrypt", "-i", k }, { stdin = h.read(d .. "/m.age") })
    t.eq(r.code, 0, r.stderr)
    t.eq(r.stdout == h.read(plain), true)
  end
  local r = h.pgvault({ "decrypt", "-i", k3, "-i", k2, d .. "/m.age" })
  t.eq(r.code, 0, "several -i: " .. r.stderr)
  r = h.pgvault({ "decrypt", "-i", k3, "-o", d .. "/no.out", d .. "/m.age" })
  t.eq(r.code, 1)
  t.match(r.stderr, "^pgvault: decrypt: age: no identity matched any of the file's 2 recipient stanza")
  t.ok(not fs.exists(d .. "/no.out"))
end)

t.test("a file age encrypts with a passphrase typed at its prompt opens with --passphrase-file", function()
  local d = h.tmpdir()
  local plain = data_file(d, 100000)
  local s = tty.start(string.format("age -p -o %s/pw.age %s", d, plain))
  local ok, err = pcall(function()
    t.ok(s.wait_for("Enter passphrase"), "age prompts: " .. s.screen())
    s.type_line("correct horse battery")
    t.ok(s.wait_for("Confirm passphrase"), "age asks to confirm: " .. s.screen())
    s.type_line("correct horse battery")
    t.eq(s.wait_exit(60), 0, "age -p exit code; screen: " .. s.screen())
  end)
  s.close()
  if not ok then error(err, 0) end
  h.write(d .. "/pass", "correct horse battery\n")
  fs.chmod(d .. "/pass", 384)
  local r = h.pgvault({ "decrypt", "--passphrase-file", d .. "/pass", "-o", d .. "/out", d .. "/pw.age" })
  t.eq(r.code, 0, r.stderr)
  t.eq(h.read(d .. "/out") == h.read(plain), true)
  h.write(d .. "/wrong", "incorrect horse\n")
  fs.chmod(d .. "/wrong", 384)
  r = h.pgvault({ "decrypt", "--passphrase-file", d .. "/wrong", d .. "/pw.age" })
  t.eq(r.code, 1)
  t.match(r.stderr, "incorrect passphrase")
  r = h.pgvault({ "decrypt", "--passphrase-file", d .. "/pass", "--max-work-factor", "17", d .. "/pw.age" })
  t.match(r.stderr, "work factor is too high")
end)

t.test("a truncated or tampered file: one clear error, exit 1, no -o file left behind", function()
  local d = h.tmpdir()
  local key, pub = keypair(d, "k.txt")
  local plain = data_file(d, 200000)
  t.eq(h.run({ "age", "-r", pub, "-o", d .. "/f.age", plain }).code, 0)
  local ct = h.read(d .. "/f.age")
  h.write(d .. "/trunc.age", ct:sub(1, #ct - 5000))
  local r = h.pgvault({ "decrypt", "-i", key, "-o", d .. "/out", d .. "/trunc.age" })
  t.eq(r.code, 1)
  t.match(r.stderr, "^pgvault: decrypt: age: payload chunk 2 failed authentication: file is truncated or tampered\n$")
  t.ok(not fs.exists(d .. "/out") and not fs.exists(d .. "/out.partial"), "no output file")
  local i = #ct - 3000
  h.write(d .. "/flip.age", ct:sub(1, i - 1) .. string.char(ct:byte(i) ~ 1) .. ct:sub(i + 1))
  h.write(d .. "/out", "previous contents")
  r = h.pgvault({ "decrypt", "-i", key, "-o", d .. "/out", d .. "/flip.age" })
  t.eq(r.code, 1)
  t.match(r.stderr, "payload chunk 3 failed authentication")
  t.eq(h.read(d .. "/out"), "previous contents", "an existing -o file is left as it was")
  t.ok(not fs.exists(d .. "/out.partial"))
  h.write(d .. "/hdr.age", (ct:gsub("%-%-%- ", "--- A", 1)))
  r = h.pgvault({ "decrypt", "-i", key, d .. "/hdr.age" })
  t.match(r.stderr, "malformed header")
end)

t.test("-o /dev/null and a FIFO are written through, never replaced", function()
  local d = h.tmpdir()
  local key, pub = keypair(d, "k.txt")
  local plain = data_file(d, 70000)
  t.eq(h.run({ "age", "-r", pub, "-o", d .. "/f.age", plain }).code, 0)
  local r = h.pgvault({ "decrypt", "-i", key, "-o", "/dev/null", d .. "/f.age" })
  t.eq(r.code, 0, r.stderr)
  t.eq(fs.stat("/dev/null").type, "chardev")
  t.ok(not fs.exists("/dev/null.partial"))
  local fifo = d .. "/pipe"
  t.eq(h.run({ "mkfifo", fifo }).code, 0)
  local reader = proc.spawn({ "sh", "-c", "cat " .. fifo .. " > " .. d .. "/got", stdout = "inherit" })
  r = h.pgvault({ "decrypt", "-i", key, "-o", fifo, d .. "/f.age" })
  t.eq(r.code, 0, r.stderr)
  t.eq(reader:wait(10), 0)
  t.eq(h.read(d .. "/got") == h.read(plain), true)
  t.eq(fs.stat(fifo).type, "fifo")
end)
