-- covers: scripts/list.lua scripts/lib/catalog.lua scripts/lib/manifest.lua
-- Issue 11, hostile input: one malformed manifest must not abort `list` of
-- a whole directory or prefix. That backup's row says `invalid`, the rest
-- are listed. Before, a table where a string belongs (database = {}) or an
-- array where an object belongs aborted the listing with a Lua error, and
-- a control character in a name could forge a row (regression tests).
local t = require "harness.testing"
local h = require "harness.env"
local cjson = require "cjson"

local HOSTILE = {
  ["20250101000001_a.backup"] = '{"format": 1, "database": {"x": 1}, "stored": {"bytes": 1}}',
  ["20250101000002_a.backup"] = '{"format": 1, "stored": {"bytes": 1e400}}',
  ["20250101000003_a.backup"] = '{"format": 1, "stored": {"bytes": 99999999999999999999999}}',
  ["20250101000004_a.backup"] = '{"format": 1, "stored": [1, 2]}',
  ["20250101000005_a.backup"] = '{"format": 1, "tables": "all of them"}',
  ["20250101000006_a.backup"] = string.rep("[", 5000) .. string.rep("]", 5000),
  ["20250101000007_a.backup"] = '{"format": 99}',
  ["20250101000008_a.backup"] = '{"format": 1, "database": "evil\\n2099-01-01 00:00:00  prod  1 B  ok  app  forged"}',
  ["20250101000009_a.backup"] = '{"format": 1, "server_version": ["15"], "stored": {"sha256": 7}}',
}

local function fill(put)
  put("20250101000000_a.backup", '{"format": 1, "database": "app", "stored": {"bytes": 1}}')
  for name, text in pairs(HOSTILE) do put(name, text) end
  put("20250101000010_a.backup", '{"format": 1, "database": "app", "stored": {"bytes": 1}}')
end

local function check(r, place)
  t.eq(r.code, 0, place .. ": " .. r.stderr)
  local lines = {}
  for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
  t.eq(#lines, 1 + 11, place .. ": a header and every backup: " .. r.stdout)
  local invalid, ok = 0, 0
  for _, l in ipairs(lines) do
    if l:find("%sinvalid%s") then invalid = invalid + 1 end
    if l:find("%sok%s") then ok = ok + 1 end
  end
  t.eq(ok, 3, place .. ": the good ones and the one whose database has a newline (shown, not obeyed)")
  t.eq(invalid, 8, place .. ": " .. r.stdout)
  t.no_match(r.stdout, "\n2099", "no forged row")
end

t.test("a directory with hostile manifests lists every backup", function()
  local d = h.tmpdir()
  fill(function(name, manifest)
    h.write(d .. "/" .. name, "x")
    h.write(d .. "/" .. name .. ".manifest.json", manifest)
  end)
  check(h.pgvault({ "list", "--from", d }), "directory")
  local j = h.pgvault({ "list", "--from", d, "--json" })
  t.eq(j.code, 0, j.stderr)
  local rows = cjson.decode(j.stdout)
  t.eq(#rows, 11)
  for _, row in ipairs(rows) do
    if row.manifest == "invalid" then t.match(row.problem, "manifest%.json .*[:;] ") end
  end
end)

t.test("a prefix with hostile manifests lists every backup", function()
  local s3 = require "pgvault.s3"
  local c = h.s3()
  local opts = require("harness.s3").direct()
  require("harness.s3").make_bucket("hostile-manifests")
  fill(function(name, manifest)
    s3.put("s3://hostile-manifests/p/" .. name, "x", opts)
    s3.put("s3://hostile-manifests/p/" .. name .. ".manifest.json", manifest, opts)
  end)
  check(h.pgvault({ "list", "--from", "s3://hostile-manifests/p/" }, { env = c.env }), "prefix")
end)
