-- covers: bindings/crypto/signing.c bindings/crypto/minisign.c bindings/crypto/keyfile.c
-- pgvault.crypto's minisign signatures: interop both ways with the real
-- minisign CLI (signatures, public keys, secret keys with and without a
-- password), tampering of every part of a signature, key ids, untrusted
-- keys, the legacy format, malformed input, and the rule that no secret
-- (signing key, pasted identity) is ever echoed in an error.
local t = require "harness.testing"
local h = require "harness.env"
local crypto = require "pgvault.crypto"
local fs = require "pgvault.fs"

local function minisign(args, stdin)
  local argv = { "minisign" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return h.run(argv, { stdin = stdin })
end

-- A key pair written by pgvault: {dir, key (handle), pub (path), public_key, key_id}.
local function our_pair(opts)
  local d = h.tmpdir()
  local kp = crypto.signing_keygen()
  kp.key:save(d .. "/k.key", opts)
  h.write(d .. "/k.pub", kp.key:public_key_file())
  return { dir = d, key = kp.key, pub = d .. "/k.pub", public_key = kp.public_key, key_id = kp.key_id }
end

t.test("signing_keygen: a handle that never shows its secret, the one-line public key, minisign's key id", function()
  local kp = crypto.signing_keygen()
  t.match(kp.public_key, "^RW[A-Za-z0-9+/]+$")
  t.eq(#kp.public_key, 56)
  t.match(kp.key_id, "^%x+$")
  t.eq(kp.key:public_key(), kp.public_key)
  t.eq(kp.key:key_id(), kp.key_id)
  t.eq(tostring(kp.key), "minisign signing key " .. kp.key_id)
  t.eq(kp.key:public_key_file(),
    "untrusted comment: minisign public key " .. kp.key_id .. "\n" .. kp.public_key .. "\n")
  t.eq(crypto.public_key(kp.public_key), { public_key = kp.public_key, key_id = kp.key_id })
  t.eq(crypto.public_key(kp.key:public_key_file()).key_id, kp.key_id)
  t.eq(crypto.public_key("  " .. kp.public_key .. " \r\n").public_key, kp.public_key, "a pasted line")
  kp.key:close()
  t.eq(tostring(kp.key), "minisign signing key (closed)")
  t.raises(function() kp.key:sign("x") end, "closed")
end)

t.test("minisign verifies what we sign: prehashed (also with -H), legacy, a long trusted comment", function()
  local p = our_pair()
  local msg = "a manifest\n" .. string.rep("\0\1\2\255", 1000)
  h.write(p.dir .. "/m", msg)
  local tc = "pgvault backup 20250101000000_prod.backup.zst.age\t" .. string.rep("x", 8000)
  h.write(p.dir .. "/m.minisig", p.key:sign(msg, { trusted_comment = tc }))
  local r = minisign({ "-V", "-H", "-p", p.pub, "-m", p.dir .. "/m" })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "Signature and comment signature verified")
  t.ok(r.stdout:find("Trusted comment: " .. tc, 1, true), "minisign shows our trusted comment")
  r = minisign({ "-V", "-P", p.public_key, "-m", p.dir .. "/m" })
  t.eq(r.code, 0, "the one-line key: " .. r.stderr)
  h.write(p.dir .. "/m.minisig", p.key:sign(msg, { trusted_comment = "old style", legacy = true }))
  t.eq(minisign({ "-V", "-p", p.pub, "-m", p.dir .. "/m" }).code, 0, "legacy")
  t.eq(minisign({ "-V", "-H", "-p", p.pub, "-m", p.dir .. "/m" }).code, 1, "-H refuses legacy")
  -- a changed message fails in minisign too
  h.write(p.dir .. "/m.minisig", p.key:sign(msg, { trusted_comment = "c" }))
  h.write(p.dir .. "/m", msg .. "!")
  t.eq(minisign({ "-V", "-p", p.pub, "-m", p.dir .. "/m" }).code, 1)
end)

t.test("we verify what minisign signs, prehashed and legacy, with its key file or the one-line key", function()
  local d = h.tmpdir()
  t.eq(minisign({ "-G", "-W", "-p", d .. "/ms.pub", "-s", d .. "/ms.key" }).code, 0)
  h.write(d .. "/m", "signed by minisign\n")
  t.eq(minisign({ "-S", "-s", d .. "/ms.key", "-m", d .. "/m", "-t", "their comment" }).code, 0)
  local pk = crypto.read_public_key(d .. "/ms.pub")
  t.eq(pk.path, d .. "/ms.pub")
  t.eq(h.read(d .. "/ms.pub"):match("public key (%x+)\n"), pk.key_id, "the key id as minisign prints it")
  local v = crypto.verify_signature("signed by minisign\n", h.read(d .. "/m.minisig"), { pk })
  t.eq(v, { key_id = pk.key_id, trusted_comment = "their comment", algorithm = "ED", key = 1 })
  v = crypto.verify_signature("signed by minisign\n", h.read(d .. "/m.minisig"), { pk.public_key })
  t.eq(v.trusted_comment, "their comment")
  t.eq(minisign({ "-S", "-l", "-s", d .. "/ms.key", "-m", d .. "/m", "-x", d .. "/legacy.sig" }).code, 0)
  v = crypto.verify_signature("signed by minisign\n", h.read(d .. "/legacy.sig"), { pk })
  t.eq(v.algorithm, "Ed")
  local err = t.raises(function()
    crypto.verify_signature("signed by minisign\n", h.read(d .. "/legacy.sig"), { pk }, { legacy = false })
  end, "legacy format")
  t.eq(err.kind, "trust")
  t.eq(err.reason, "legacy")
  err = t.raises(function() crypto.verify_signature("signed by someone\n", h.read(d .. "/m.minisig"), { pk }) end,
    "does not verify")
  t.eq(err.reason, "bad signature")
end)

t.test("secret keys both ways: minisign signs with our keys, we sign with minisign's, -R agrees", function()
  local p = our_pair()
  t.eq(fs.stat(p.dir .. "/k.key").mode, 384, "0600")
  local text = h.read(p.dir .. "/k.key")
  t.match(text, "^untrusted comment: [^\n]+\nRWQAA[A-Za-z0-9+/]+=\n$", "an unencrypted minisign key")
  h.write(p.dir .. "/m", "x")
  local r = minisign({ "-S", "-s", p.dir .. "/k.key", "-m", p.dir .. "/m" })
  t.eq(r.code, 0, r.stderr)
  t.eq(crypto.verify_signature("x", h.read(p.dir .. "/m.minisig"), { p.public_key }).key_id, p.key_id)
  t.eq(minisign({ "-R", "-s", p.dir .. "/k.key", "-p", p.dir .. "/re.pub" }).code, 0)
  t.eq(h.read(p.dir .. "/re.pub"), h.read(p.pub), "minisign derives the same public key file")
  -- theirs, read by us (minisign leaves an unencrypted key's checksum zero)
  local d = h.tmpdir()
  t.eq(minisign({ "-G", "-W", "-p", d .. "/ms.pub", "-s", d .. "/ms.key" }).code, 0)
  local theirs = crypto.read_signing_key(d .. "/ms.key")
  t.eq(theirs:public_key(), crypto.read_public_key(d .. "/ms.pub").public_key)
  h.write(d .. "/m", "y")
  h.write(d .. "/m.minisig", theirs:sign("y", { trusted_comment = "from pgvault" }))
  t.eq(minisign({ "-V", "-p", d .. "/ms.pub", "-m", d .. "/m" }).code, 0)
end)

t.test("password-protected keys both ways (scrypt, minisign's checksum), wrong and missing passwords", function()
  local p = our_pair({ password = "correct horse", kdf = "interactive" })
  h.write(p.dir .. "/m", "z")
  local r = minisign({ "-S", "-s", p.dir .. "/k.key", "-m", p.dir .. "/m" }, "correct horse\n")
  t.eq(r.code, 0, "minisign opens our encrypted key: " .. r.stderr)
  t.eq(crypto.verify_signature("z", h.read(p.dir .. "/m.minisig"), { p.public_key }).key_id, p.key_id)
  r = minisign({ "-S", "-s", p.dir .. "/k.key", "-m", p.dir .. "/m" }, "wrong\n")
  t.neq(r.code, 0, "and refuses a wrong password")
  t.eq(crypto.read_signing_key(p.dir .. "/k.key", { password = "correct horse" }):key_id(), p.key_id)
  local err = t.raises(function() crypto.read_signing_key(p.dir .. "/k.key", { password = "wrong" }) end,
    "wrong password for the signing key")
  t.eq(err.failure, "password")
  t.eq(err.path, p.dir .. "/k.key")
  t.raises(function() crypto.read_signing_key(p.dir .. "/k.key") end, "encrypted with a password, and none was given")
  -- a passphrase handle read from a file works as the password
  h.write(p.dir .. "/pw", "correct horse\n")
  fs.chmod(p.dir .. "/pw", 384)
  t.eq(crypto.read_signing_key(p.dir .. "/k.key", { password = crypto.read_passphrase(p.dir .. "/pw") }):key_id(),
    p.key_id)
  -- minisign's own encrypted key (its default cost: 1 GiB of scrypt), read by us
  local d = h.tmpdir()
  r = minisign({ "-G", "-p", d .. "/ms.pub", "-s", d .. "/ms.key" }, "their pw\ntheir pw\n")
  t.eq(r.code, 0, r.stderr)
  local theirs = crypto.read_signing_key(d .. "/ms.key", { password = "their pw" })
  t.eq(theirs:public_key(), crypto.read_public_key(d .. "/ms.pub").public_key)
  t.raises(function() crypto.read_signing_key(d .. "/ms.key", { password = "their pw", kdf_limit = "interactive" }) end,
    "asks for more scrypt work than allowed")
end)

t.test("every bit flip of a signature file and of the message fails; nothing but the exact pair verifies", function()
  local kp = crypto.signing_keygen()
  local msg = "the manifest"
  local sig = kp.key:sign(msg, { trusted_comment = "backup x" })
  local keys = { kp.public_key }
  t.eq(crypto.verify_signature(msg, sig, keys).trusted_comment, "backup x")
  local reasons = {}
  for i = 1, #sig do
    for bit = 0, 7 do
      local bad = sig:sub(1, i - 1) .. string.char(sig:byte(i) ~ (1 << bit)) .. sig:sub(i + 1)
      local ok, err = pcall(crypto.verify_signature, msg, bad, keys)
      if ok then
        -- only the untrusted comment is free text
        t.ok(i <= #"untrusted comment: signature from pgvault", "flip of bit " .. bit .. " of byte " .. i)
      else
        t.eq(err.kind, "trust", "kind, byte " .. i)
        reasons[err.reason] = true
      end
    end
  end
  t.eq(reasons, { malformed = true, ["bad signature"] = true, ["bad trusted comment"] = true,
    ["untrusted key"] = true })
  for i = 1, #msg do
    local bad = msg:sub(1, i - 1) .. string.char(msg:byte(i) ~ 1) .. msg:sub(i + 1)
    t.eq(select(2, pcall(crypto.verify_signature, bad, sig, keys)).reason, "bad signature")
  end
  t.eq(select(2, pcall(crypto.verify_signature, msg .. "\n", sig, keys)).reason, "bad signature")
end)

t.test("a signature by another key, or a forged trusted comment, names the key id and fails as trust", function()
  local a, b = crypto.signing_keygen(), crypto.signing_keygen()
  local sig = b.key:sign("m", { trusted_comment = "tc" })
  local err = t.raises(function() crypto.verify_signature("m", sig, { a.public_key }) end,
    "signed with key " .. b.key_id .. ", which is not one of the trusted keys")
  t.eq(err.kind, "trust")
  t.eq(err.reason, "untrusted key")
  t.eq(err.key_id, b.key_id)
  t.eq(crypto.verify_signature("m", sig, { a.public_key, b.public_key }).key, 2)
  -- the trusted comment replaced: the global signature no longer covers it
  local forged = sig:gsub("trusted comment: tc\n", "trusted comment: another backup\n")
  err = t.raises(function() crypto.verify_signature("m", forged, { b.public_key }) end, "altered")
  t.eq(err.reason, "bad trusted comment")
  -- b's signature relabelled with a's key id: a's key does not verify it
  local lines = {}
  for l in sig:gmatch("[^\n]+") do lines[#lines + 1] = l end
  local a_id_sig = a.key:sign("m"):match("\n(R[^\n]+)\n")
  lines[2] = a_id_sig:sub(1, 14) .. lines[2]:sub(15)
  local relabelled = table.concat(lines, "\n") .. "\n"
  t.eq(select(2, pcall(crypto.verify_signature, "m", relabelled, { a.public_key })).reason, "bad signature")
end)

t.test("malformed signatures and keys: one line each, nothing echoed", function()
  local kp = crypto.signing_keygen()
  local sig = kp.key:sign("m", { trusted_comment = "tc" })
  local cases = {
    [""] = "first line",
    ["untrusted comment: x\n"] = "second line",
    [sig:gsub("^untrusted comment: ", "comment: ")] = "first line",
    [sig:gsub("\ntrusted comment: ", "\ncomment: ")] = "third line",
    [sig .. "extra\n"] = "follows its fourth line",
    [sig:gsub("\n[^\n]+\n$", "\n")] = "fourth line",
    [sig:gsub("trusted comment: tc", "trusted comment: t\rc")] = "not one line",
    [sig:gsub("trusted comment: tc", "trusted comment: " .. string.rep("c", 8174))] = "too long",
  }
  for text, why in pairs(cases) do
    local err = t.raises(function() crypto.verify_signature("m", text, { kp.public_key }) end, why)
    t.eq(err.kind, "trust")
    t.eq(err.reason, "malformed")
  end
  t.eq(crypto.verify_signature("m", sig:gsub("\n", "\r\n"), { kp.public_key }).trusted_comment, "tc", "CRLF")
  t.raises(function() kp.key:sign("m", { trusted_comment = "two\nlines" }) end, "one line")
  t.raises(function() kp.key:sign("m", { trusted_comment = string.rep("c", 8174) }) end, "one line of at most 8173")
  t.raises(function() crypto.verify_signature("m", sig, {}) end, "no public keys")
  -- a secret key given where a public key belongs: refused without a word of it
  local d = h.tmpdir()
  kp.key:save(d .. "/k.key")
  local secret = h.read(d .. "/k.key")
  local line = secret:match("\n([^\n]+)\n$")
  for _, text in ipairs({ secret, line, "untrusted comment: x\n" .. line:sub(1, 56) .. "A" }) do
    local err = t.raises(function() crypto.public_key(text) end, "not a minisign public key")
    t.eq(err.kind, "crypto")
    t.ok(not tostring(err):find(line:sub(20, 40), 1, true), "no part of the secret key in: " .. tostring(err))
  end
  t.raises(function() crypto.read_public_key(d .. "/k.key") end,
    "public key file .*k.key: not a minisign public key: this is a secret key %(keep it private%)")
  h.write(d .. "/garbage.key", "untrusted comment: x\n" .. string.rep("A", 211) .. "=\n")
  fs.chmod(d .. "/garbage.key", 384)
  t.raises(function() crypto.read_signing_key(d .. "/garbage.key") end, "not an Ed25519 minisign secret key")
  h.write(d .. "/short.key", "untrusted comment: x\nRWQAAA==\n")
  fs.chmod(d .. "/short.key", 384)
  t.raises(function() crypto.read_signing_key(d .. "/short.key") end, "not 212 base64 characters")
  -- one damaged byte of the secret key: its checksum or its public half says so
  local raw = line:sub(1, 100) .. (line:sub(101, 101) == "A" and "B" or "A") .. line:sub(102)
  h.write(d .. "/damaged.key", "untrusted comment: x\n" .. raw .. "\n")
  fs.chmod(d .. "/damaged.key", 384)
  t.raises(function() crypto.read_signing_key(d .. "/damaged.key") end, "damaged")
end)

t.test("key files: 0600, never overwritten, never through a symlink, no secret in any string", function()
  local d = h.tmpdir()
  local kp = crypto.signing_keygen()
  kp.key:save(d .. "/k.key")
  local before = h.read(d .. "/k.key")
  local err = t.raises(function() crypto.signing_keygen().key:save(d .. "/k.key") end, "already exists")
  t.eq(err.kind, "exists")
  t.eq(h.read(d .. "/k.key"), before, "the existing key is untouched")
  h.write(d .. "/victim", "keep me")
  t.eq(h.run({ "ln", "-s", d .. "/victim", d .. "/link.key" }).code, 0)
  t.raises(function() kp.key:save(d .. "/link.key") end, "already exists")
  t.eq(h.read(d .. "/victim"), "keep me")
  local left = {}
  for _, n in ipairs(fs.listdir(d)) do if n:match("partial") then left[#left + 1] = n end end
  t.eq(left, {}, "no temporary file left behind")
  -- the secret never reaches Lua: not in the handle's string, not in the public file
  local seed = before:match("\n([^\n]+)\n$"):sub(80, 120)
  t.no_match(tostring(kp.key), seed)
  t.no_match(kp.key:public_key_file(), seed)
  t.raises(function() kp.key:save(d .. "/p.key", { password = "" }) end, "1 to 1022 bytes")
  t.raises(function() kp.key:save(d .. "/p.key", { kdf = "weak" }) end, "kdf must be")
end)

t.test("a pasted secret key is never echoed by the recipient parsers (X25519, post-quantum, any case)", function()
  local pq = "AGE-SECRET-KEY-PQ-1HZLGZUPT4ETPKDEV8HSGFDCYZ4E522W0A7PU2LHT8EH9W6YLNC3SW78XKG"
  local x = "AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0"
  for _, s in ipairs({ pq, x, pq:lower(), x:lower(), "age1pq1" .. pq, "  " .. x }) do
    local err = t.raises(function() crypto.check_recipient(s) end, "secret key")
    t.ok(not tostring(err):find(x:sub(17, 30), 1, true) and not tostring(err):find(pq:sub(20, 34), 1, true)
      and not tostring(err):lower():find(x:lower():sub(17, 30), 1, true)
      and not tostring(err):lower():find(pq:lower():sub(20, 34), 1, true), "not echoed: " .. tostring(err))
  end
  -- nor a password pasted where a recipient belongs; a recipient's typo is shown briefly
  local err = t.raises(function() crypto.check_recipient("hunter2-correct-horse") end, "not shown")
  t.no_match(tostring(err), "hunter2")
  local typo = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwk"
  t.raises(function() crypto.check_recipient(typo) end,
    "malformed age recipient \"age1zvkyg2lqzraa2lnjvqej...\": bad checksum")
  local d = h.tmpdir()
  h.write(d .. "/r.txt", "# recipients\n" .. x .. "\n")
  err = t.raises(function() crypto.read_recipients(d .. "/r.txt") end, "line 2: this is a secret key")
  t.no_match(tostring(err), x:sub(17, 30))
end)

t.test("the minisign fuzz corpora replay cleanly: success, or a trust (signature) or crypto (key) error", function()
  local public = "RWQhhU/k5p0Hbh/4X57JuzABU+BjO5UbP6B310FyaK2NU6hZE21EaLEV"
  local dir = "tests/fuzz/minisign_sig_corpus"
  local names = fs.listdir(dir)
  t.ok(#names >= 10, "signature corpus present")
  local good = 0
  for _, name in ipairs(names) do
    local ok, err = pcall(crypto.verify_signature, "pgvault fuzz message\n", fs.read_file(dir .. "/" .. name),
      { public })
    if ok then good = good + 1 else t.eq(type(err) == "table" and err.kind, "trust", name .. ": " .. tostring(err)) end
  end
  t.ok(good >= 10, "the seeds verify")
  dir = "tests/fuzz/minisign_key_corpus"
  names = fs.listdir(dir)
  t.ok(#names >= 6, "key corpus present")
  local tmp = h.tmpdir() .. "/k"
  local parsed = 0
  for _, name in ipairs(names) do
    local data = fs.read_file(dir .. "/" .. name)
    local ok, err
    if #data > 0 and data:byte(1) & 1 == 1 then
      fs.write_file(tmp, data:sub(2), { mode = 384 })
      ok, err = pcall(crypto.read_signing_key, tmp, { password = "password", kdf_limit = "interactive" })
    elseif #data > 0 then
      ok, err = pcall(crypto.public_key, data:sub(2))
    end
    if ok then parsed = parsed + 1 elseif #data > 0 then t.eq(err.kind, "crypto", name .. ": " .. tostring(err)) end
  end
  t.ok(parsed >= 6, "the seeds parse")
end)
