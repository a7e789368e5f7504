-- covers: scripts/lib/layers.lua
-- lib.layers: the one vocabulary for a backup's layers (restore had its own:
-- "zst", "plain", "age"), recognised by the first bytes; what is under age
-- comes from the manifest, else the name; the stages that peel them.
local t = require "harness.testing"
local layers = require "lib.layers"
local stream = require "pgvault.stream"

local AGE = "age-encryption.org/v1\n-> X25519 abc\n"
local ARMOR = "-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n"
local ZSTD = "\x28\xB5\x2F\xFD\x00\x00"
local PGDMP = "PGDMP\x01\x0e\x00"

t.test("sniff and detect", function()
  t.eq(layers.sniff(PGDMP), "pgdmp")
  t.eq(layers.sniff(ZSTD), "zstd")
  t.eq(layers.sniff(AGE), "age")
  t.eq(layers.sniff(ARMOR), "age")
  t.eq(layers.sniff("hello"), nil)
  t.eq(layers.detect(PGDMP), { "pgdmp" })
  t.eq(layers.detect(ZSTD), { "zstd", "pgdmp" })
  t.eq(layers.detect(AGE, "x.backup.zst.age"), { "age", "zstd", "pgdmp" })
  t.eq(layers.detect(AGE, "x.backup.age"), { "age", "pgdmp" })
  t.eq(layers.detect(AGE, "/dev/fd/63"), { "age", "pgdmp" })
  -- the manifest wins over the name
  t.eq(layers.detect(AGE, "x.backup.age", { compression = { method = "zstd" } }), { "age", "zstd", "pgdmp" })
  t.eq(layers.detect(AGE, "x.backup.zst.age", { compression = { method = "none" } }), { "age", "pgdmp" })
  t.ok(layers.has({ "age", "pgdmp" }, "age"))
  t.ok(not layers.has({ "pgdmp" }, "age"))
end)

t.test("require says what it is not; stages peel; age without an identity is a usage error", function()
  local e = t.raises(function() layers.require("hello", "notes.txt") end,
    "^notes%.txt is not a backup: its first bytes are none of a pg_dump custom%-format archive")
  t.eq(e.kind, "verify")
  t.eq(#layers.stages({ "pgdmp" }), 0)
  local s = layers.stages({ "zstd", "pgdmp" })
  t.eq(#s, 1)
  t.eq(s[1]:name(), "unzstd")
  e = t.raises(function() layers.stages({ "age", "pgdmp" }, { name = "b.age" }) end,
    "^b%.age is encrypted %(age%): give the identity file that opens it with %-i FILE$")
  t.eq(e.kind, "usage")
  local crypto = require "pgvault.crypto"
  local kg = crypto.keygen()
  s = layers.stages({ "age", "zstd", "pgdmp" }, { identities = { kg.identity } })
  t.eq({ s[1]:name(), s[2]:name() }, { "decrypt", "unzstd" })
  -- a round trip through the stages it gives
  local r = stream.run { stream.string("hello"), stream.zstd {}, crypto.encryptor { recipients = { kg.recipient } },
    stream.buffer() }
  local out = stream.run { stream.string(r.buffer.data), s[1], s[2], stream.buffer() }
  t.eq(out.buffer.data, "hello")
end)
