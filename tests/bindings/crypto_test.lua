-- covers: bindings/crypto.c bindings/crypto/
-- pgvault.crypto: the age v1 format against the C2SP CCTV test vectors (all
-- 143, with both AEAD engines), round trips, key files, tampering (every bit
-- of a small file, truncation at and inside chunk boundaries) and the rule
-- that no unauthenticated byte is ever released downstream.
local t = require "harness.testing"
local h = require "harness.env"
local crypto = require "pgvault.crypto"
local stream = require "pgvault.stream"
local fs = require "pgvault.fs"

local function sha256(data)
  return stream.run({ stream.string(data), stream.sha256(), stream.discard() }).sha256.sha256
end

-- Decrypts `data`; returns ok, plaintext released downstream, error.
local function decrypt(data, opts)
  local ok, res = pcall(stream.run, { stream.string(data), crypto.decryptor(opts),
    stream.buffer { max = 64 << 20 } })
  if ok then return true, res.buffer.data end
  local released = res.result and res.result.buffer and res.result.buffer.data or ""
  return false, released, res
end

local function encrypt(data, opts)
  return stream.run({ stream.string(data), crypto.encryptor(opts), stream.buffer { max = 64 << 20 } }).buffer.data
end

-- A plaintext of n bytes that differs in every chunk.
local function plaintext(n)
  local parts, i = {}, 0
  while #table.concat(parts) < n do
    i = i + 1
    parts[#parts + 1] = string.format("%08d:", i) .. string.rep(string.char(65 + i % 26), 247)
  end
  return table.concat(parts):sub(1, n)
end

-- The CCTV vectors ------------------------------------------------------------

local vectors_dir
local function vectors()
  if vectors_dir then return vectors_dir end
  vectors_dir = h.tmpdir()
  local r = h.run({ "node", h.root .. "/tests/harness/cctv_extract.mjs", vectors_dir }, { cwd = h.root })
  if r.code ~= 0 then error("cannot extract the CCTV vectors (run make deps): " .. r.stderr) end
  return vectors_dir
end

local function load_vector(dir, name)
  local v = { name = name, identities = {}, passphrases = {} }
  for line in fs.read_file(dir .. "/" .. name .. ".meta"):gmatch("[^\n]+") do
    local k, val = line:match("^([^:]+): (.*)$")
    if k == "identity" then
      v.identities[#v.identities + 1] = val
    elseif k == "passphrase" then
      v.passphrases[#v.passphrases + 1] = val
    elseif k then
      v[k] = val
    end
  end
  v.data = fs.read_file(dir .. "/" .. name .. ".age")
  return v
end

local function run_vector(v, aead)
  -- a vector without identities still needs one to reach the header checks
  local ids = #v.identities > 0 and v.identities or (#v.passphrases == 0 and { crypto.keygen().identity }) or nil
  local opts = { identities = ids, passphrase = v.passphrases[1], aead = aead,
    armor = v.armored == "yes" }
  local ok, released, err = decrypt(v.data, opts)
  return ok and "success" or (type(err) == "table" and err.failure) or tostring(err), released, err
end

t.test("all 143 CCTV vectors: outcome and released plaintext match, with both AEAD engines", function()
  local dir = vectors()
  local names = {}
  for _, f in ipairs(fs.listdir(dir)) do
    local n = f:match("^(.+)%.meta$")
    if n then names[#names + 1] = n end
  end
  table.sort(names)
  t.eq(#names, 143, "vector count")
  local checked, pq = 0, 0
  for _, name in ipairs(names) do
    local v = load_vector(dir, name)
    for _, aead in ipairs({ "openssl", "sodium" }) do
      local outcome, released, err = run_vector(v, aead)
      t.eq(outcome, v.expect, name .. " (" .. aead .. ") outcome; error: " .. tostring(err))
      if v.payload then
        t.eq(sha256(released), v.payload, name .. " (" .. aead .. ") SHA-256 of the released plaintext")
      end
      if outcome ~= "success" then
        t.match(tostring(err), "^age: ", name .. " error message")
      end
    end
    checked = checked + 1
    for _, id in ipairs(v.identities) do
      if id:find("^AGE%-SECRET%-KEY%-PQ%-1") then pq = pq + 1 end
    end
  end
  t.eq(checked, 143)
  t.eq(pq, 19, "vectors with a post-quantum (ML-KEM-768 + X25519) identity")
end)

t.test("the payload failure message names the chunk and says truncated or tampered", function()
  local v = load_vector(vectors(), "stream_bad_tag_second_chunk")
  local _, released, err = run_vector(v, "openssl")
  t.eq(#released, 65536, "the first chunk authenticated and was released")
  t.match(tostring(err), "^age: payload chunk 1 failed authentication: file is truncated or tampered$")
  t.eq(err.kind, "crypto")
  t.eq(err.chunk, 1)
end)

-- Round trips, both engines -------------------------------------------------------

t.test("round trips at chunk boundaries, armored or not, one AEAD engine sealing, the other opening", function()
  local kg = crypto.keygen()
  for _, n in ipairs({ 0, 1, 65535, 65536, 65537, 131072, 200000 }) do
    local p = plaintext(n)
    for _, pair in ipairs({ { "openssl", "sodium" }, { "sodium", "openssl" } }) do
      for _, armor in ipairs({ false, true }) do
        local c = encrypt(p, { recipients = { kg.recipient }, aead = pair[1], armor = armor })
        local ok, out, err = decrypt(c, { identities = { kg.identity }, aead = pair[2] })
        t.ok(ok, string.format("n=%d %s->%s armor=%s: %s", n, pair[1], pair[2], tostring(armor), tostring(err)))
        t.eq(out == p, true, "plaintext restored, n=" .. n)
        if armor then
          t.match(c, "^%-%-%-%-%-BEGIN AGE ENCRYPTED FILE%-%-%-%-%-\n")
          t.match(c, "\n%-%-%-%-%-END AGE ENCRYPTED FILE%-%-%-%-%-\n$")
        else
          t.match(c, "^age%-encryption%.org/v1\n%-> X25519 ")
        end
      end
    end
  end
end)

t.test("several recipients: each identity alone opens the file; a stranger's does not", function()
  local a, b, c = crypto.keygen(), crypto.keygen(), crypto.keygen()
  local ct = encrypt("for a and b", { recipients = { a.recipient, b.recipient } })
  t.eq(select(2, decrypt(ct, { identities = { a.identity } })), "for a and b")
  t.eq(select(2, decrypt(ct, { identities = { b.identity } })), "for a and b")
  t.eq(select(2, decrypt(ct, { identities = { c.identity, b.identity } })), "for a and b")
  local ok, released, err = decrypt(ct, { identities = { c.identity } })
  t.eq(ok, false)
  t.eq(released, "")
  t.eq(err.failure, "no match")
  t.match(tostring(err), "no identity matched any of the file's 2 recipient stanza")
end)

t.test("check_header reads only the header, from a file or from the first bytes given", function()
  local a, b = crypto.keygen(), crypto.keygen()
  local ct = encrypt(plaintext(200000), { recipients = { a.recipient } })
  local path = h.tmpdir() .. "/x.age"
  fs.write_file(path, ct)
  local got = crypto.check_header(path, { identities = { a.identity } })
  t.eq(got.recipient_type, "X25519")
  t.eq(got.stanzas, 1)
  -- the first bytes (a ranged GET of an object) are enough; the payload is not needed
  got = crypto.check_header("s3://b/x.age", { identities = { a.identity }, data = ct:sub(1, 4096) })
  t.eq(got.stanzas, 1)
  local err = t.raises(function() crypto.check_header(path, { identities = { b.identity } }) end, "no identity matched")
  t.eq(err.failure, "no match")
  t.raises(function() crypto.check_header("s3://b/x.age", { identities = { a.identity }, data = ct:sub(1, 40) }) end,
    "s3://b/x.age ends inside its header %(in the bytes given%)")
  -- a flipped byte in the header fails its MAC
  local bad = ct:sub(1, 60) .. string.char(ct:byte(61) ~ 1) .. ct:sub(62, 4096)
  t.raises(function() crypto.check_header("s3://b/x.age", { identities = { a.identity }, data = bad }) end)
end)

t.test("passphrases: work factor in the stanza, wrong passphrase, absurd work factors refused", function()
  local ct = encrypt("secret words", { passphrase = "correct horse", work_factor = 10 })
  t.match(ct, "\n%-> scrypt [A-Za-z0-9+/]+ 10\n")
  t.eq(select(2, decrypt(ct, { passphrase = "correct horse" })), "secret words")
  local _, _, err = decrypt(ct, { passphrase = "wrong" })
  t.eq(err.failure, "no match")
  t.match(tostring(err), "incorrect passphrase")
  _, _, err = decrypt(ct, { passphrase = "correct horse", max_work_factor = 9 })
  t.eq(err.failure, "header failure")
  t.match(tostring(err), "work factor is too high")
  local kg = crypto.keygen()
  _, _, err = decrypt(ct, { identities = { kg.identity } })
  t.match(tostring(err), "encrypted with a passphrase")
  t.raises(function() crypto.encryptor { passphrase = "x", recipients = { kg.recipient } } end, "cannot be combined")
  t.raises(function() crypto.encryptor { passphrase = "x", work_factor = 31 } end, "work_factor")
  t.match(encrypt("", { passphrase = "p" }), "\n%-> scrypt [A-Za-z0-9+/]+ 18\n", "age's default work factor")
end)

-- Keys and key files ------------------------------------------------------------

t.test("keygen, recipient_of, identity handles keep the secret out of Lua strings", function()
  local kg = crypto.keygen()
  t.match(kg.recipient, "^age1[02-9ac-hj-np-z]+$")
  t.eq(#kg.recipient, 62)
  t.eq(crypto.recipient_of(kg.identity), kg.recipient)
  t.eq(kg.identity:type(), "X25519")
  t.match(tostring(kg.identity), "^age identity %(X25519, recipient age1")
  t.no_match(tostring(kg.identity), "SECRET")
  -- the spec's example key pair
  t.eq(crypto.recipient_of("AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"),
    "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj")
  kg.identity:close()
  t.match(tostring(kg.identity), "closed")
  t.raises(function() kg.identity:recipient() end, "closed")
  t.raises(function() crypto.identity("AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEY") end,
    "bad checksum")
  t.raises(function() crypto.check_recipient("age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwk") end,
    "malformed age recipient")
  t.raises(function() crypto.check_recipient("ssh-ed25519 AAAA") end, "SSH recipients are not supported")
  t.match(crypto.fingerprint("age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"), "^sha256:%x+$")
end)

t.test("identity and recipients files in age's format; a loose mode warns", function()
  local d = h.tmpdir()
  local kg1, kg2 = crypto.keygen(), crypto.keygen()
  kg1.identity:save(d .. "/k1.txt")
  t.eq(fs.stat(d .. "/k1.txt").mode, 384, "0600")
  local text = h.read(d .. "/k1.txt")
  t.match(text, "^# created: %d%d%d%d%-%d%d%-%d%dT[%d:]+[Z+-][%d:]*\n# public key: " .. kg1.recipient ..
    "\nAGE%-SECRET%-KEY%-1[%u%d]+\n$")
  t.raises(function() kg1.identity:save(d .. "/k1.txt") end, "already exists")
  kg2.identity:save(d .. "/k2.txt")
  h.write(d .. "/both.txt", "# two keys\n\n" .. h.read(d .. "/k1.txt") .. "\r\n   \n" .. h.read(d .. "/k2.txt"))
  fs.chmod(d .. "/both.txt", 384)
  local ids = crypto.read_identities(d .. "/both.txt")
  t.eq(#ids, 2)
  t.eq(ids[2]:recipient(), kg2.recipient)
  h.write(d .. "/recips.txt", "# team\n" .. kg1.recipient .. "\n\n  " .. kg2.recipient .. "  \r\n# end\n")
  t.eq(crypto.read_recipients(d .. "/recips.txt"), { kg1.recipient, kg2.recipient })
  h.write(d .. "/bad.txt", "# x\n" .. kg1.recipient .. "\nnot-a-key\n")
  t.raises(function() crypto.read_recipients(d .. "/bad.txt") end, "recipients file .*bad.txt, line 3")
  h.write(d .. "/empty.txt", "# nothing\n")
  fs.chmod(d .. "/empty.txt", 384)
  t.raises(function() crypto.read_identities(d .. "/empty.txt") end, "holds no identity")
  -- a group-readable identity file works but warns (checked through the CLI's stderr)
  fs.chmod(d .. "/k2.txt", 420)
  local r = h.pgvault({ "-e", "return #require('pgvault.crypto').read_identities('" .. d .. "/k2.txt')" })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "readable by group or others %(mode 644%)")
  t.no_match(r.stderr, "AGE%-SECRET%-KEY")
  h.write(d .. "/pass.txt", "pass phrase\nignored second line\n")
  fs.chmod(d .. "/pass.txt", 384)
  local p = crypto.read_passphrase(d .. "/pass.txt")
  t.eq(p:type(), "passphrase")
  t.eq(select(2, decrypt(encrypt("x", { passphrase = p, work_factor = 10 }), { passphrase = "pass phrase" })), "x")
end)

-- Tampering and truncation ------------------------------------------------------

t.test("every single-bit flip of a small file is detected and releases nothing", function()
  local kg = crypto.keygen()
  local p = "a small backup"
  local ct = encrypt(p, { recipients = { kg.recipient } })
  local dec = { identities = { kg.identity } }
  t.eq(select(2, decrypt(ct, dec)), p)
  for i = 1, #ct do
    local byte = ct:byte(i)
    for bit = 0, 7 do
      local bad = ct:sub(1, i - 1) .. string.char(byte ~ (1 << bit)) .. ct:sub(i + 1)
      local ok, released, err = decrypt(bad, dec)
      if ok then t.ok(false, string.format("flip of bit %d of byte %d went unnoticed", bit, i)) end
      t.eq(released, "", "nothing released after flipping byte " .. i)
      t.match(tostring(err), "^age: ", "a clear error for byte " .. i)
    end
  end
end)

t.test("every single-bit flip of a two-chunk body fails at the right chunk", function()
  local kg = crypto.keygen()
  local p = plaintext(65536 + 100)
  local ct = encrypt(p, { recipients = { kg.recipient } })
  local body = #ct - (65536 + 16) - (100 + 16)
  local dec = { identities = { kg.identity } }
  -- a sample of bits in each chunk: the first and last bytes, the tags, a middle byte
  for _, off in ipairs({ 1, 2, 30000, 65536, 65552, 65553, 65553 + 50, 65553 + 115 }) do
    local i = body + off
    local bad = ct:sub(1, i - 1) .. string.char(ct:byte(i) ~ 0x10) .. ct:sub(i + 1)
    local ok, released, err = decrypt(bad, dec)
    t.eq(ok, false, "flip at payload byte " .. off)
    local first = off <= 65552
    t.eq(#released, first and 0 or 65536, "released only authenticated chunks, flip at " .. off)
    t.match(tostring(err), "payload chunk " .. (first and 0 or 1) ..
      " failed authentication: file is truncated or tampered")
  end
end)

t.test("truncation at every chunk boundary and inside chunks fails and releases no unauthenticated byte", function()
  local kg = crypto.keygen()
  local p = plaintext(3 * 65536 + 1000)
  local ct = encrypt(p, { recipients = { kg.recipient } })
  local dec = { identities = { kg.identity } }
  local payload = #ct - (3 * (65536 + 16) + 1000 + 16)
  local cuts = { 10, payload - 17, payload - 1 }
  for k = 0, 3 do
    local at = payload + k * (65536 + 16)
    for _, delta in ipairs({ 0, 1, 15, 16, 17, 40000 }) do cuts[#cuts + 1] = at + delta end
    cuts[#cuts + 1] = at - 1
  end
  for _, cut in ipairs(cuts) do
    if cut < #ct and cut >= 0 then
      local ok, released, err = decrypt(ct:sub(1, cut), dec)
      t.eq(ok, false, "truncated to " .. cut .. " bytes")
      t.eq(released, p:sub(1, #released), "only a prefix of the plaintext is released")
      t.eq(#released % 65536, 0, "only whole authenticated chunks, cut at " .. cut)
      t.ok(#released <= math.max(0, cut - payload), "no more than what was there")
      t.match(tostring(err), "^age: .*trunc", "the error says truncated, cut at " .. cut)
    end
  end
  local ok, _, err = decrypt(ct .. "x", dec)
  t.eq(ok, false, "trailing garbage")
  t.match(tostring(err), "failed authentication")
end)

t.test("not an age file, empty input and misuse", function()
  local kg = crypto.keygen()
  local _, _, err = decrypt("PGDMP\1\14\0", { identities = { kg.identity } })
  t.match(tostring(err), "not an age file")
  t.eq(err.failure, "header failure")
  _, _, err = decrypt("", { identities = { kg.identity } })
  t.match(tostring(err), "empty")
  t.raises(function() crypto.decryptor {} end, "no identities")
  t.raises(function() crypto.encryptor {} end, "no recipients")
  t.raises(function() crypto.decryptor { identities = { kg.identity }, aead = "rot13" } end, "aead")
  t.raises(function() crypto.encryptor { recipients = { "age1yubikey1qwerty" } } end, "unsupported age recipient type")
  t.raises(function() crypto.encryptor { recipients = { "age1pq1xyz" } } end, "malformed post%-quantum age recipient")
end)

t.test("the age fuzz corpus replays cleanly: success or a crypto error, nothing else", function()
  local dir = "tests/fuzz/age_corpus"
  local names = fs.listdir(dir)
  t.ok(#names >= 100, "corpus present")
  local ids = { crypto.identity("AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0"),
    crypto.identity("AGE-SECRET-KEY-PQ-1HZLGZUPT4ETPKDEV8HSGFDCYZ4E522W0A7PU2LHT8EH9W6YLNC3SW78XKG") }
  local successes = 0
  for _, name in ipairs(names) do
    local ok, _, err = decrypt(fs.read_file(dir .. "/" .. name),
      { identities = ids, passphrase = "password", max_work_factor = 10 })
    if ok then
      successes = successes + 1
    else
      t.eq(type(err) == "table" and err.kind, "crypto", name .. ": " .. tostring(err))
      t.ok(err.failure, name .. " has a failure class")
    end
  end
  t.ok(successes > 10, "valid files in the corpus decrypt")
end)

t.test("post-quantum hybrid keys: the spec's example recipient, round trips, no mixing with X25519", function()
  -- age's spec: AGE-SECRET-KEY-PQ-1XX76... has the 1959-character recipient age1pq1x34nzsvr0...
  local spec = crypto.recipient_of("AGE-SECRET-KEY-PQ-1XX76JRALNLXDMEW0CRK45QMCCH4X06SE84UN3VPM33W6HWDX0H3SK3ZQFR")
  t.eq(#spec, 1959)
  t.eq(sha256(spec), "a091dd7e0ee9d62b75173dcc98441a0424baa941e66a8776e570a4ae60ff61ea", "the spec's recipient")
  local a, b = crypto.keygen { pq = true }, crypto.keygen { pq = true }
  t.eq(a.identity:type(), "mlkem768x25519")
  t.match(a.recipient, "^age1pq1")
  local p = plaintext(70000)
  local ct = encrypt(p, { recipients = { a.recipient, b.recipient } })
  t.match(ct, "^age%-encryption%.org/v1\n%-> mlkem768x25519 ")
  for _, id in ipairs({ a.identity, b.identity }) do
    local ok, out, err = decrypt(ct, { identities = { id } })
    t.ok(ok, tostring(err))
    t.eq(out == p, true)
  end
  local d = h.tmpdir()
  a.identity:save(d .. "/pq.txt")
  t.match(h.read(d .. "/pq.txt"), "\n# public key: age1pq1[%l%d]+\nAGE%-SECRET%-KEY%-PQ%-1[%u%d]+\n$")
  t.eq(crypto.read_identities(d .. "/pq.txt")[1]:recipient(), a.recipient)
  t.raises(function() crypto.encryptor { recipients = { a.recipient, crypto.keygen().recipient } } end,
    "cannot be mixed")
end)
