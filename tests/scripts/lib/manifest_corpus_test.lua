-- covers: scripts/lib/manifest.lua scripts/lib/json.lua
-- The manifest decoder's fuzz corpus (tests/fuzz/manifest_fuzz.c) replays:
-- whatever the text, lib.manifest.decode returns a manifest its readers
-- can use and write again, or refuses it with an error of kind "verify".
local t = require "harness.testing"
local h = require "harness.env"
local fs = require "pgvault.fs"
local manifest = require "lib.manifest"

t.test("the fuzz corpus replays: a usable manifest or a verify error, nothing else", function()
  local dir = h.root .. "/tests/fuzz/manifest_corpus"
  local names = fs.listdir(dir)
  t.ok(#names >= 8, "corpus present")
  local accepted, refused = 0, 0
  for _, name in ipairs(names) do
    local ok, m = pcall(manifest.decode, fs.read_file(dir .. "/" .. name), name)
    if ok then
      manifest.row_counts(m)
      local again = manifest.decode(manifest.encode(m), name .. " again")
      t.eq(again.format, m.format, name .. ": written again, read again")
      accepted = accepted + 1
    else
      t.eq(type(m) == "table" and m.kind, "verify", name .. ": " .. tostring(type(m) == "table" and m.message or m))
      refused = refused + 1
    end
  end
  t.ok(accepted >= 2 and refused >= 2, string.format("both outcomes seen (%d accepted, %d refused)", accepted, refused))
end)

t.test("a number no double holds (1e999), in a field of any name, is refused: nothing could write it again", function()
  local dir = h.root .. "/tests/fuzz/manifest_corpus"
  local ok, err = pcall(manifest.decode, fs.read_file(dir .. "/infinity"), "infinity")
  t.ok(not ok, "refused")
  t.eq(type(err) == "table" and err.kind, "verify", tostring(err))
end)
