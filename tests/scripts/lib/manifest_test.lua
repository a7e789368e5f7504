-- covers: scripts/lib/manifest.lua scripts/lib/json.lua
-- lib.manifest: the one reader of manifests. Every check lives in decode,
-- and every reader (list, verify, restore, download, the bucket listing)
-- refuses what it refuses: before, only lib.manifest refused a newer format,
-- and verify, download and the bucket listing took any JSON (regression
-- tests below).
local t = require "harness.testing"
local h = require "harness.env"
local fs = require "pgvault.fs"
local manifest = require "lib.manifest"
local json = require "lib.json"

local GOOD = [[{"format": 1, "database": "app", "environment": "prod",
  "stored": {"name": "x.backup", "bytes": 34387, "sha256": "]] .. string.rep("ab", 32) .. [["},
  "tables": [{"schema": "public", "name": "t", "rows": 12}], "future_field": {"kept": true}}]]

t.test("decode: a good manifest, whole numbers as integers, unknown fields kept", function()
  local m = manifest.decode(GOOD, "m.json")
  t.eq(math.type(m.stored.bytes), "integer", "sizes are integers")
  t.eq(m.stored.bytes, 34387)
  t.eq(m.future_field, { kept = true })
  t.eq(manifest.row_counts(m), { ["public.t"] = 12 })
end)

t.test("decode refuses what is not a usable manifest, naming the place and the field", function()
  local cases = {
    { "{not json", "not valid JSON" },
    { "[1, 2]", "not a JSON object" },
    { "\"text\"", "not a JSON object" },
    { "{}", "no format field" },
    { '{"format": "1"}', "format must be an integer, not a string" },
    { '{"format": 1.5}', "format must be an integer" },
    { '{"format": 2}', "has format 2; this pgvault reads formats 1 to 1: upgrade pgvault" },
    { '{"format": 0}', "has format 0" },
    { '{"format": 1, "database": {"a": 1}}', "database must be a string, not an object" },
    { '{"format": 1, "stored": {"bytes": 1e400}}', "stored.bytes must be a whole number >= 0, not a number" },
    { '{"format": 1, "stored": {"bytes": 99999999999999999999}}', "stored.bytes must be a whole number" },
    { '{"format": 1, "stored": {"bytes": -1}}', "stored.bytes must be a whole number >= 0" },
    { '{"format": 1, "stored": {"sha256": "xyz"}}', "stored.sha256 must be 64 lower%-case hex digits" },
    { '{"format": 1, "stored": "big"}', "stored must be an object, not a string" },
    { '{"format": 1, "stored": [1, 2]}', "stored must be an object, not an array" },
    { '{"format": 1, "tables": {"a": 1}}', "tables must be an array" },
    { '{"format": 1, "tables": [{"name": ["t"]}]}', "tables%[1%]%.name must be a string" },
    { '{"format": 1, "environment": null}', "environment must be a string, not null" },
    { '{"format": 1, "encryption": {"recipients": [1]}}', "encryption%.recipients%[1%] must be a string" },
  }
  for _, c in ipairs(cases) do
    local e = t.raises(function() manifest.decode(c[1], "B.manifest.json") end, c[2], c[1])
    t.eq(e.kind, "verify", c[1])
    t.match(e.message, "^B%.manifest%.json", "names the manifest: " .. c[1])
    t.eq(select(2, e.message:gsub("\n", "")), 0, "one line")
  end
  t.raises(function() manifest.decode(string.rep(" ", manifest.MAX_BYTES + 1), "m") end, "larger than")
end)

t.test("encode: readable, stable key order, integers exact, empty arrays stay arrays", function()
  local m = manifest.new { database = "app", stored = { bytes = (1 << 53) + 1 }, tables = json.array() }
  local text = manifest.encode(m)
  t.match(text, '^{\n  "format": 1,\n  "tool": "pgvault [^"]+",\n  "created_at": "[^"]+Z",\n  "database": "app"')
  t.match(text, '"bytes": 9007199254740993')
  t.match(text, '"tables": %[%]')
  local back = manifest.decode(text, "round trip")
  t.eq(back.database, "app")
  t.eq(back.tables, {})
end)

t.test("write, read, for_archive: the suffix is lib.naming's; an existing manifest is never replaced", function()
  local d = h.tmpdir()
  local archive = d .. "/20250101000000_local.backup"
  local m, why = manifest.for_archive(archive)
  t.eq(m, nil)
  t.match(why, "no manifest")
  local path = manifest.write(archive, manifest.new { database = "one" })
  t.eq(path, require("lib.naming").manifest_path(archive))
  t.eq(fs.stat(path).mode, 384, "0600")
  t.eq(manifest.for_archive(archive).database, "one")
  local e = t.raises(function() manifest.write(archive, manifest.new { database = "two" }) end, "exists")
  t.eq(e.kind, "exists")
  t.eq(manifest.read(path).database, "one", "the first manifest stays")
  h.write(path, '{"format": 7}')
  t.raises(function() manifest.for_archive(archive) end, "has format 7")
end)

-- The same newer-format manifest, to every reader.
local function newer(dir)
  local name = "20250101000000_local.backup"
  local r = h.pgvault({ "backup", "--db", h.createdb("manifest_readers_test"), "--to", dir, "--compress", "none" })
  t.eq(r.code, 0, r.stderr)
  local path = r.stdout:match("([^\n]*)\n?$")
  local m = fs.read_file(path .. ".manifest.json"):gsub('"format": 1', '"format": 2')
  fs.write_file(path .. ".manifest.json", m)
  return path, name
end

t.test("every local reader refuses a manifest of a newer format (verify took any JSON)", function()
  local d = h.tmpdir()
  local path = newer(d)
  local v = h.pgvault({ "verify", path })
  t.eq(v.code, 1, v.stdout .. v.stderr)
  t.match(v.stderr, "has format 2; this pgvault reads formats 1 to 1: upgrade pgvault")
  local l = h.pgvault({ "list", "--from", d })
  t.eq(l.code, 0, l.stderr)
  t.match(l.stdout, "invalid")
  local r = h.pgvault({ "restore", path, "--db", h.pg().url("manifest_readers_restored") })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "has format 2")
end)

t.test("the bucket readers refuse it too (the listing and download took any JSON)", function()
  local s3 = h.s3()
  h.make_bucket("manifest-readers")
  local d = h.tmpdir()
  local path = newer(d)
  local name = path:match("[^/]+$")
  for _, f in ipairs({ name, name .. ".manifest.json" }) do
    local r = h.aws({ "s3", "cp", d .. "/" .. f, "s3://manifest-readers/p/" .. f })
    t.eq(r.code, 0, r.stderr)
  end
  local l = h.pgvault({ "list", "--from", "s3://manifest-readers/p/" }, { env = s3.env })
  t.eq(l.code, 0, l.stderr)
  t.match(l.stdout, "invalid")
  local dl = h.pgvault({ "download", "s3://manifest-readers/p/" .. name, "-o", d .. "/copy" }, { env = s3.env })
  t.eq(dl.code, 1, dl.stderr)
  t.match(dl.stderr, "not a readable manifest")
  t.ok(not fs.exists(d .. "/copy"), "nothing downloaded")
  local v = h.pgvault({ "verify", "s3://manifest-readers/p/" .. name }, { env = s3.env })
  t.eq(v.code, 1, v.stderr)
  t.match(v.stderr, "has format 2")
end)
