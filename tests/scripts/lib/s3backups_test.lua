-- covers: scripts/lib/s3backups.lua
-- lib.s3backups: backups under a bucket prefix in one listing (issue 17).
-- 'latest' reads manifests newest first only until one is complete, valid
-- and of the right database; the full scan (list) reads them 16 at a time;
-- a server that fails to answer is an error, never 'no backup'. The proxy
-- counts the requests.
local t = require "harness.testing"
local s3h = require "harness.s3"
local s3proxy = require "harness.s3proxy"
local s3 = require "pgvault.s3"
local manifest = require "lib.manifest"
local naming = require "lib.naming"
local s3backups = require "lib.s3backups"

local PROXY = s3proxy.start()
local BUCKET = s3h.make_bucket("lib-s3backups")
local BASE = os.time() - 30 * 86400

-- Backup i (a larger i is newer) of database db under prefix; its manifest
-- as given ("good", "bad", "none", "size").
local function put_backup(prefix, i, db, kind)
  local name = naming.archive_name(naming.stamp(BASE + i * 3600), "prod", ".zst")
  local url = "s3://" .. BUCKET .. "/" .. prefix .. name
  local body = "archive " .. i
  s3.put(url, body, s3h.direct())
  local m = manifest.new { environment = "prod", database = db,
    stored = { name = name, bytes = kind == "size" and #body + 1 or #body, sha256 = string.rep("0", 64) } }
  if kind == "bad" then
    s3.put(naming.manifest_path(url), "{ not json", s3h.direct())
  elseif kind ~= "none" then
    s3.put(naming.manifest_path(url), manifest.encode(m), s3h.direct())
  end
  return url
end

local function opts()
  return PROXY:opts({ retry_base_ms = 10 })
end

t.test("latest: one listing, manifests newest first only until one fits, of the right database", function()
  local want = put_backup("a/", 1, "shop", "good")
  put_backup("a/", 2, "shop", "size")  -- the archive is not what its manifest recorded
  put_backup("a/", 3, "other", "good") -- another database's, newer
  put_backup("a/", 4, "shop", "bad")   -- an unreadable manifest
  put_backup("a/", 5, "shop", "none")  -- unfinished: no manifest, never read
  for i = 6, 40 do put_backup("a/", i - 40, "shop", "good") end -- older ones, never read
  PROXY:reset()
  local url, entry = s3backups.resolve("s3://" .. BUCKET .. "/a/latest", opts(), { database = "shop" })
  t.eq(url, want)
  t.eq(entry.manifest.database, "shop")
  local ops = PROXY:stats().ops
  t.eq(ops.ListObjectsV2, 1, "one listing")
  t.eq(ops.GetObject, 4, "manifests 4, 3, 2 and 1; none of the older ones")
  t.eq(ops.HeadObject, nil, "no HEAD per backup")
  -- without a database the newest complete one, whatever its database
  PROXY:reset()
  t.match(s3backups.resolve("s3://" .. BUCKET .. "/a/latest", opts()), "%d+_prod%.backup%.zst$")
  t.eq(PROXY:stats().ops.GetObject, 2, "manifests 4 (bad) and 3 (fits)")
  local err = t.raises(function()
    s3backups.resolve("s3://" .. BUCKET .. "/a/latest", opts(), { database = "nope" })
  end, "no complete backup %(one with a manifest%) of database nope under s3://lib%-s3backups/a/")
  t.eq(err.kind, "io")
end)

t.test("scan: one listing, the manifests read 16 at a time, each judged", function()
  for i = 1, 48 do put_backup("b/", i, "shop", i % 12 == 0 and "bad" or (i % 10 == 0 and "none" or "good")) end
  PROXY:reset()
  PROXY:rules({ { op = "GetObject", action = "slow", ms = 150 } })
  local list = s3backups.scan("s3://" .. BUCKET .. "/b/", opts())
  local st = PROXY:stats()
  PROXY:rules({})
  t.eq(#list, 48)
  t.eq(st.ops.ListObjectsV2, 1, "one listing")
  t.eq(st.ops.GetObject, 44, "every manifest there is, once")
  t.ok(st.max_in_flight.GetObject > 4 and st.max_in_flight.GetObject <= 16,
    "in parallel, at most 16 at once: " .. st.max_in_flight.GetObject)
  local count = {}
  for _, b in ipairs(list) do count[b.status] = (count[b.status] or 0) + 1 end
  t.eq(count, { ok = 40, invalid = 4, missing = 4 })
  t.ok(naming.newer(list[1], list[2]), "newest first")
end)

t.test("a server that fails to answer is an error, not a backup without a manifest", function()
  PROXY:reset()
  PROXY:rules({ { op = "GetObject", action = "status503", retry_after = 0 } })
  local failing = PROXY:opts({ max_attempts = 2, retry_base_ms = 10 })
  t.raises(function() s3backups.scan("s3://" .. BUCKET .. "/a/", failing) end, "GetObject .* failed after 2 attempts")
  t.raises(function() s3backups.resolve("s3://" .. BUCKET .. "/a/latest", failing) end,
    "GetObject .* failed after 2 attempts")
  PROXY:rules({})
end)
