-- covers: scripts/lib/nightly.lua
-- nightly --sign KEY: every manifest it writes is signed (minisign checks
-- the signatures), and the read-back check of the off-site copy checks
-- them with the trusted keys (--trust, or KEY.pub beside the key): an
-- object replaced in the bucket, or replaced with its manifest, is refused.
local t = require "harness.testing"
local h = require "harness.env"
local cjson = require "cjson"
local s3 = require "pgvault.s3"

local DB = "nightly_sign_test"
local src = h.createdb(DB)
h.psql(src, "CREATE TABLE items (id int PRIMARY KEY, name text); "
  .. "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g;")

local keys = h.tmpdir()
local KEY, OTHER = keys .. "/sign.key", keys .. "/other.key"
assert(h.pgvault({ "keygen", "--sign", "-o", KEY }).code == 0)
assert(h.pgvault({ "keygen", "--sign", "-o", OTHER }).code == 0)
assert(h.run({ "age-keygen", "-o", keys .. "/age.txt" }).code == 0)
local AGE_PUB = h.run({ "age-keygen", "-y", keys .. "/age.txt" }).stdout:match("%S+")

local function direct()
  local c = h.s3()
  return { endpoint_url = c.endpoint, region = c.region, access_key_id = c.access_key,
    secret_access_key = c.secret_key }
end

local function bucket(name)
  s3.create_bucket("s3://" .. name, direct())
  return "s3://" .. name .. "/prod/"
end

local function nightly(args)
  local argv = { "nightly", "--db", src, "--suffix", "prod", "--drill-every", "never" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return h.pgvault(argv, { env = h.s3().env, timeout = 600 })
end

local function step(summary, name)
  for _, s in ipairs(summary.steps) do if s.name == name then return s end end
end

t.test("nightly --sign: minisign verifies every manifest it wrote; the read-back checks them with KEY.pub", function()
  local dest = bucket("nightly-signed")
  local r = nightly({ "--to", dest, "--sign", KEY, "-r", AGE_PUB, "--identity", keys .. "/age.txt", "--json" })
  t.eq(r.code, 0, r.stderr)
  local summary = cjson.decode(r.stdout)
  t.match(step(summary, "read-back").detail, "every byte read back and checked %(500 rows%), signatures good",
    "the read-back checked the signature")
  t.match(r.stderr, "the read%-back check takes the signature's public key from .*sign%.key%.pub", "which key")
  t.no_match(r.stderr, "nothing proves it came from your backup job", "no unsigned warning")
  local c = s3.client(direct())
  local listed = {}
  for _, o in ipairs(c:list(dest)) do listed[#listed + 1] = o.key:match("[^/]+$") end
  table.sort(listed)
  local d = h.tmpdir()
  local checked = 0
  for _, name in ipairs(listed) do
    if name:match("%.manifest%.json$") then
      t.ok(c:head(dest .. name .. ".minisig"), "signed: " .. name)
      h.write(d .. "/" .. name, c:get(dest .. name))
      h.write(d .. "/" .. name .. ".minisig", c:get(dest .. name .. ".minisig"))
      local ms = h.run({ "minisign", "-V", "-p", KEY .. ".pub", "-m", d .. "/" .. name })
      t.eq(ms.code, 0, "minisign -V " .. name .. ": " .. ms.stderr)
      checked = checked + 1
    end
  end
  t.eq(checked, 1, "the one backup's manifest: " .. table.concat(listed, " "))
  r = nightly({ "--to", dest, "--sign", KEY, "-r", AGE_PUB, "--json" })
  t.eq(r.code, 0, r.stderr)
  t.match(step(cjson.decode(r.stdout), "read-back").detail, "^stored bytes match, signatures good %(no identity",
    "without an identity: the stored bytes and the signature")
  r = nightly({ "--to", dest, "--sign", KEY, "--trust", OTHER .. ".pub" })
  t.eq(r.code, 1, "signed by a key the run does not trust: the read-back refuses it")
  t.match(r.stderr, "nightly prod failed at read%-back: the copy in the bucket did not verify: .*trust",
    "one line: " .. r.stderr)
  r = nightly({ "--to", dest, "--sign", keys .. "/missing.key" })
  t.eq(r.code, 1, "a missing signing key")
  t.match(r.stderr, "missing%.key", "names it")
end)

t.test("the read-back check refuses an object replaced in the bucket, with or without its manifest", function()
  local nightly_lib = require "lib.nightly"
  local dest = bucket("nightly-replaced")
  local opts = direct()
  local function fresh_run()
    local run = nightly_lib.new { settings = { env = "prod" }, to = dest, db = src, suffix = "prod", sign = KEY,
      identity = {}, trust = {}, recipient = {}, recipients_file = {} }
    nightly_lib.backup(run, opts)
    return run
  end
  -- Another backup of the same database, unsigned, as whoever can write to
  -- the bucket could make. Its data differs: pg_dump's header carries the
  -- time in seconds, so a dump of the same data in the same second is the
  -- very same bytes (that is no forgery, and the check rightly took it).
  h.psql(src, "INSERT INTO items VALUES (501, 'forged');")
  local forged = require("lib.backup").run { db = src, to = h.tmpdir(), suffix = "prod" }
  h.psql(src, "DELETE FROM items WHERE id = 501;")
  local c = s3.client(opts)
  local run = fresh_run()
  t.neq(forged.result.stored.sha256, run.last.result.stored.sha256, "the forgery is other bytes")
  t.eq(nightly_lib.readback(run, opts):match("signatures good$"), "signatures good", "as written: good")
  c:put(run.last.path, h.read(forged.path))
  local ok, err = pcall(nightly_lib.readback, run, opts)
  t.ok(not ok, "refused")
  t.eq(err.kind, "trust", "as a trust failure")
  t.match(err.message, "^the copy in the bucket did not verify: .*replaced", err.message)
  run = fresh_run()
  c:put(run.last.path, h.read(forged.path))
  c:put(run.last.path .. ".manifest.json", h.read(forged.path .. ".manifest.json"))
  ok, err = pcall(nightly_lib.readback, run, opts)
  t.ok(not ok, "refused with its manifest replaced too")
  t.eq(err.kind, "trust", "the signature does not match the manifest")
  -- the restore drill reads as a restore does: the replaced object never
  -- reaches pg_restore
  ok, err = pcall(nightly_lib.drill, run, opts)
  t.ok(not ok, "the drill refuses it")
  t.eq(err.kind, "trust", tostring(err.message))
  t.eq(h.psql(h.pg().admin_url(), "SELECT count(*) FROM pg_database WHERE datname LIKE 'pgvault_drill_%';"), "0\n",
    "no scratch database was made")
  run = fresh_run()
  t.match(nightly_lib.drill(run, opts), "^restored into pgvault_drill_nightly_sign_test and dropped",
    "a signed backup as written: the drill runs")
  -- the prune step: a newer backup nobody signed is not "the newest", so
  -- it cannot get the real ones pruned (it is left alone, and said so)
  local naming = require "lib.naming"
  local fake = dest .. naming.archive_name(naming.stamp(os.time() + 3600), "prod", ".zst")
  c:put(fake, h.read(forged.path))
  c:put(fake .. ".manifest.json", h.read(forged.path .. ".manifest.json"))
  local pr = nightly_lib.new { settings = { env = "prod" }, to = dest, db = src, suffix = "prod", sign = KEY,
    identity = {}, trust = {}, recipient = {}, recipients_file = {}, keep_last = 1 }
  t.eq(nightly_lib.prune(pr, opts), "1 kept, 2 removed", "the newest signed backup kept, the two replaced removed")
  t.ok(c:head(run.last.path) and c:head(run.last.path .. ".manifest.json"), "the newest signed backup stays")
  t.ok(c:head(fake), "the unsigned one is left for you to inspect")
end)
