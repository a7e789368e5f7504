-- covers: scripts/encrypt.lua
-- pgvault encrypt: files that the age CLI opens (X25519, several
-- recipients, armored, passphrases typed into age's prompt in a pty),
-- recipients files, and usage errors.
local t = require "harness.testing"
local h = require "harness.env"
local tty = require "harness.tty"
local fs = require "pgvault.fs"

local SIZES = { 0, 1, 65535, 65536, 65537, 131072, 3 * 1024 * 1024 + 7 }

local function data_file(dir, n)
  local path = string.format("%s/plain-%d", dir, n)
  local r = h.run({ "sh", "-c", string.format("head -c %d /dev/urandom > %s", n, path) })
  assert(r.code == 0, r.stderr)
  return path
end

local function keypair(dir, name)
  local path = dir .. "/" .. name
  assert(h.run({ "age-keygen", "-o", path }).code == 0)
  return path, h.run({ "age-keygen", "-y", path }).stdout:match("%S+")
end

t.test("age -d opens what pgvault encrypts, at every chunk boundary size", function()
  local d = h.tmpdir()
  local key, pub = keypair(d, "k.txt")
  for _, n in ipairs(SIZES) do
    local plain = data_file(d, n)
    local r = h.pgvault({ "encrypt", "-r", pub, "-o", plain .. ".age", plain })
    t.eq(r.code, 0, r.stderr)
    local header = #h.read(plain .. ".age"):match("^.-%-%-%- [^\n]+\n")
    t.eq(fs.stat(plain .. ".age").size, header + 16 + n + 16 * math.max(1, (n + 65535) // 65536),
      "size: header, nonce, chunks with tags (n=" .. n .. ")")
    local out = h.run({ "age", "-d", "-i", key, plain .. ".age" })
    t.eq(out.code, 0, out.stderr)
    t.eq(out.stdout == h.read(plain), true, "age -d restored " .. n .. " bytes")
  end
end)

t.test("several recipients, from -r and -R files: each of age's identities opens the file; armored too", function()
  local d = h.tmpdir()
  local k1, p1 = keypair(d, "k1.txt")
  local k2, p2 = keypair(d, "k2.txt")
  local k3, p3 = keypair(d, "k3.txt")
  h.write(d .. "/team.txt", "# the team\n" .. p2 .. "\n\n" .. p3 .. "\n")
  local plain = data_file(d, 131072 + 5)
  local r = h.pgvault({ "encrypt", "-r", p1, "-R", d .. "/team.txt", "-o", d .. "/multi.age", plain })
  t.eq(r.code, 0, r.stderr)
  local ra = h.pgvault({ "encrypt", "-r", p1, "-r", p2, "-a", plain }) -- armored to stdout
  t.eq(ra.code, 0, ra.stderr)
  t.match(ra.stdout, "^%-%-%-%-%-BEGIN AGE ENCRYPTED FILE%-%-%-%-%-\n")
  h.write(d .. "/multi.asc", ra.stdout)
  for _, k in ipairs({ k1, k2, k3 }) do
    local out = h.run({ "age", "-d", "-i", k, d .. "/multi.age" })
    t.eq(out.code, 0, out.stderr)
    t.eq(out.stdout == h.read(plain), true, "age -d -i " .. k)
  end
  for _, k in ipairs({ k1, k2 }) do
    local out = h.run({ "age", "-d", "-i", k, d .. "/multi.asc" })
    t.eq(out.code, 0, out.stderr)
    t.eq(out.stdout == h.read(plain), true, "armored, age -d -i " .. k)
  end
  local none = h.run({ "age", "-d", "-i", k3, d .. "/multi.asc" })
  t.ok(none.code ~= 0, "k3 was not a recipient of the armored file")
end)

t.test("a passphrase file pgvault encrypts opens in age -d (passphrase typed at its prompt)", function()
  local d = h.tmpdir()
  local plain = data_file(d, 70000)
  h.write(d .. "/pass", "tr0ub4dor & 3\n")
  fs.chmod(d .. "/pass", 384)
  local r = h.pgvault({ "encrypt", "--passphrase-file", d .. "/pass", "-o", d .. "/pw.age", plain })
  t.eq(r.code, 0, r.stderr)
  t.match(h.read(d .. "/pw.age"), "\n%-> scrypt [%w+/]+ 18\n", "age's default work factor")
  local s = tty.start(string.format("age -d -o %s/out %s/pw.age", d, d))
  local ok, err = pcall(function()
    t.ok(s.wait_for("Enter passphrase"), "age prompts: " .. s.screen())
    s.type_line("tr0ub4dor & 3")
    t.eq(s.wait_exit(60), 0, "age -d exit code; screen: " .. s.screen())
  end)
  s.close()
  if not ok then error(err, 0) end
  t.eq(h.read(d .. "/out") == h.read(plain), true, "age restored the plaintext")
end)

t.test("usage and input errors are one clear line; nothing is written", function()
  local d = h.tmpdir()
  local plain = data_file(d, 10)
  local r = h.pgvault({ "encrypt", "-o", d .. "/x.age", plain })
  t.eq(r.code, 2)
  t.match(r.stderr, "nothing to encrypt to")
  r = h.pgvault({ "encrypt", "-r", "age1notarecipient", "-o", d .. "/x.age", plain })
  t.eq(r.code, 1)
  t.match(r.stderr, "^pgvault: encrypt: malformed age recipient")
  local spec_recipient = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"
  r = h.pgvault({ "encrypt", "-r", spec_recipient, "-o", d .. "/x.age", d .. "/missing" })
  t.eq(r.code, 1)
  t.match(r.stderr, "cannot open .*missing")
  t.ok(not fs.exists(d .. "/x.age") and not fs.exists(d .. "/x.age.partial"), "no output left")
end)
