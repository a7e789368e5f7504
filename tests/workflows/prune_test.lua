-- covers: scripts/prune.lua scripts/lib/prune.lua scripts/lib/retention.lua
-- pgvault prune: restic's rules per suffix on a directory and a bucket,
-- --dry-run's table (kept and why, removed), the newest complete backup
-- never removed (a damaged newest manifest is left alone), manifests
-- deleted before archives, archives without a manifest and temporaries
-- only once past the grace period (a young reservation protects its
-- backup), stale multipart uploads aborted, one listing pass, the
-- environment's lock and its settings from the configuration file.
local t = require "harness.testing"
local h = require "harness.env"
local s3proxy = require "harness.s3proxy"
local fs = require "pgvault.fs"
local s3 = require "pgvault.s3"
local manifest = require "lib.manifest"
local naming = require "lib.naming"
local prune = require "lib.prune"
local retention = require "lib.retention"

local SHA = string.rep("a", 64)
local DAY = 86400
local NOW = os.time()

local function stamp(days_ago, hour) return naming.stamp(NOW - days_ago * DAY - (hour or 0) * 3600) end

local function manifest_text(env, name)
  return manifest.encode(manifest.new { environment = env, database = "app",
    stored = { name = name, bytes = 1, sha256 = SHA } })
end

-- Writers for a directory (with modification times) and a bucket.
local function dir_store(dir)
  fs.mkdir_p(dir)
  return {
    dest = dir,
    put = function(name, data, age_seconds)
      local path = dir .. "/" .. name
      fs.write_file(path, data)
      if age_seconds then
        local r = h.run({ "touch", "-d", "@" .. (NOW - age_seconds), path })
        assert(r.code == 0, r.stderr)
      end
    end,
    exists = function(name) return fs.exists(dir .. "/" .. name) end,
    names = function()
      local out = fs.listdir(dir)
      table.sort(out)
      return out
    end,
  }
end

local function bucket_store(url, opts)
  local c = s3.client(opts)
  local bucket, prefix = s3.parse_url(url)
  return {
    dest = url,
    put = function(name, data) c:put(url .. name, data) end,
    exists = function(name) return c:head(url .. name) ~= nil end,
    names = function()
      local out = {}
      for _, o in ipairs(c:list("s3://" .. bucket .. "/" .. prefix)) do out[#out + 1] = o.key:sub(#prefix + 1) end
      table.sort(out)
      return out
    end,
  }
end

-- Ten daily prod backups and five staging ones (complete), plus what a
-- crash or an upload in flight leaves. Returns their names.
local function populate(st)
  local n = { prod = {}, staging = {} }
  for d = 0, 9 do
    local name = naming.archive_name(stamp(d), "prod", ".zst")
    st.put(name, "x", d * DAY)
    st.put(name .. naming.MANIFEST_SUFFIX, manifest_text("prod", name), d * DAY)
    st.put(name .. ".manifest.json.minisig", "sig", d * DAY)
    n.prod[#n.prod + 1] = name
  end
  for d = 0, 4 do
    local name = naming.archive_name(stamp(d, 1), "staging", "")
    st.put(name, "x", d * DAY)
    st.put(name .. naming.MANIFEST_SUFFIX, manifest_text("staging", name), d * DAY)
    n.staging[#n.staging + 1] = name
  end
  n.old_orphan = naming.archive_name(stamp(3, 5), "prod", ".zst")
  st.put(n.old_orphan, "partial upload", 3 * DAY)
  n.young_orphan = naming.archive_name(stamp(0, -1), "prod", ".zst")
  st.put(n.young_orphan, "in flight", 600)
  n.reserved_orphan = naming.archive_name(stamp(2, 3), "prod", ".zst")
  st.put(n.reserved_orphan, "in flight, slow", 2 * DAY)
  st.put(naming.reservation_name(n.reserved_orphan:match("^(.-)%.backup")), "", 60)
  n.stale_reservation = naming.reservation_name(naming.stem(stamp(5, 7), "prod"))
  st.put(n.stale_reservation, "", 5 * DAY)
  n.old_partial = "." .. naming.archive_name(stamp(4), "prod", ".zst") .. ".a1b2c3.partial"
  st.put(n.old_partial, "tmp", 4 * DAY)
  n.young_partial = "." .. naming.archive_name(stamp(0), "prod", ".zst") .. ".d4e5f6.partial"
  st.put(n.young_partial, "tmp", 60)
  n.stray_manifest = naming.archive_name(stamp(20), "prod", "") .. naming.MANIFEST_SUFFIX
  st.put(n.stray_manifest, manifest_text("prod", "gone"), 20 * DAY)
  st.put("notes.txt", "not ours", 30 * DAY)
  -- The roles and grants of four runs (--all-databases): a group of their own.
  n.globals = {}
  for d = 0, 3 do
    local name = naming.stem(stamp(d, 2), "prod") .. "_globals.sql.zst"
    st.put(name, "g", d * DAY)
    st.put(name .. naming.MANIFEST_SUFFIX, manifest_text("prod", name), d * DAY)
    n.globals[#n.globals + 1] = name
  end
  return n
end

local function run(args, opts)
  return h.pgvault(args, { env = (opts or {}).env or h.s3().env, cwd = (opts or {}).cwd })
end

t.test("directory: --dry-run shows the plan and changes nothing; prune then does exactly that", function()
  local st = dir_store(h.tmpdir() .. "/b")
  local n = populate(st)
  local before = st.names()
  local r = run({ "prune", st.dest, "--keep-daily", "3", "--keep-last", "1", "--dry-run" })
  t.eq(r.code, 0, "dry run: " .. r.stderr)
  t.eq(st.names(), before, "nothing changed")
  local out = r.stdout
  t.match(out, "^ACTION +NAME +WHY\n", "header")
  t.match(out, "\nkeep +" .. n.prod[1]:gsub("%p", "%%%0") .. " +last, daily\n", "newest: last and daily")
  t.match(out, "\nkeep +" .. n.prod[3]:gsub("%p", "%%%0") .. " +daily\n", "third day")
  t.match(out, "\nremove +" .. n.prod[4]:gsub("%p", "%%%0") .. " +no rule keeps it\n", "fourth day")
  t.match(out, "\nkeep +" .. n.staging[1]:gsub("%p", "%%%0") .. " +last, daily\n", "staging is its own group")
  t.match(out, "\nremove +" .. n.old_orphan:gsub("%p", "%%%0") .. " +no manifest, 3d old\n", "old orphan")
  t.match(out, "\nleave +" .. n.young_orphan:gsub("%p", "%%%0") .. " +no manifest, 10m old: an upload may be in "
    .. "flight\n", "young orphan")
  t.match(out, "\nleave +" .. n.reserved_orphan:gsub("%p", "%%%0") .. " +no manifest, 2d old: an upload may be in "
    .. "flight\n", "a reservation protects it")
  t.match(out, "\nremove +" .. n.stale_reservation:gsub("%p", "%%%0") .. " +stale reservation, 5d old\n", "stale")
  t.match(out, "\nremove +" .. n.old_partial:gsub("%p", "%%%0") .. " +temporary file, 4d old\n", "old partial")
  t.match(out, "\nleave +" .. n.young_partial:gsub("%p", "%%%0") .. " +temporary file, 1m old\n", "young partial")
  t.match(out, "\nremove +" .. n.stray_manifest:gsub("%p", "%%%0") .. " +without its archive, 20d old\n", "stray")
  t.no_match(out, "notes%.txt", "other files are not ours")
  t.match(out, "\nkeep +" .. n.globals[1]:gsub("%p", "%%%0") .. " +last, daily\n", "roles: their own group")
  t.match(out, "\nremove +" .. n.globals[4]:gsub("%p", "%%%0") .. " +no rule keeps it\n", "old roles go")

  r = run({ "prune", st.dest, "--keep-daily", "3", "--keep-last", "1" })
  t.eq(r.code, 0, "prune: " .. r.stderr)
  t.match(r.stdout, "pruned .*: 9 backups kept, 10 removed; 4 incomplete or temporary files removed, 0 unfinished "
    .. "uploads aborted", "summary")
  for i = 1, 10 do
    t.eq(st.exists(n.prod[i]), i <= 3, "prod " .. i)
    t.eq(st.exists(n.prod[i] .. naming.MANIFEST_SUFFIX), i <= 3, "its manifest")
    t.eq(st.exists(n.prod[i] .. ".manifest.json.minisig"), i <= 3, "its signature")
  end
  for i = 1, 5 do t.eq(st.exists(n.staging[i]), i <= 3, "staging " .. i) end
  for i = 1, 4 do t.eq(st.exists(n.globals[i]), i <= 3, "roles " .. i) end
  for _, name in ipairs({ n.young_orphan, n.reserved_orphan, n.young_partial, "notes.txt" }) do
    t.ok(st.exists(name), "left: " .. name)
  end
  for _, name in ipairs({ n.old_orphan, n.stale_reservation, n.old_partial, n.stray_manifest }) do
    t.ok(not st.exists(name), "removed: " .. name)
  end
end)

t.test("the newest complete backup stays; a damaged newest manifest is left alone and does not count", function()
  local st = dir_store(h.tmpdir() .. "/b")
  local names = {}
  for d = 0, 3 do
    local name = naming.archive_name(stamp(d), "prod", "")
    st.put(name, "x", d * DAY)
    st.put(name .. naming.MANIFEST_SUFFIX, d == 0 and "{not json" or manifest_text("prod", name), d * DAY)
    names[#names + 1] = name
  end
  local r = run({ "prune", st.dest, "--keep-last", "1", "--dry-run" })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "\nleave +" .. names[1]:gsub("%p", "%%%0") .. " +damaged manifest, left for you to inspect",
    "damaged newest left")
  t.match(r.stdout, "\nkeep +" .. names[2]:gsub("%p", "%%%0") .. " +last\n", "the newest good one is kept")
  r = run({ "prune", st.dest, "--keep-last", "1" })
  t.eq(r.code, 0, r.stderr)
  t.ok(st.exists(names[1]) and st.exists(names[2]), "both stay")
  t.ok(not st.exists(names[3]) and not st.exists(names[4]), "older ones go")
  r = run({ "prune", st.dest })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "no keep rules: every backup is kept", "no rules: nothing removed, and it says so")
  t.ok(st.exists(names[2]), "kept")
end)

t.test("manifests are deleted before signatures and archives (a stopped prune never leaves a bad latest)", function()
  local calls = {}
  local inv = { remote = true, base = "s3://b/", client = {
    delete_many = function(_, base, keys) calls[#calls + 1] = { base = base, keys = keys } end } }
  local b = { name = "x.backup", path = "s3://b/p/x.backup",
    manifest_entry = { path = "s3://b/p/x.backup.manifest.json" },
    signature_entry = { path = "s3://b/p/x.backup.manifest.json.minisig" } }
  prune.apply({ remove = { b }, orphans = {}, uploads = {} }, inv)
  t.eq(calls[1].keys, { "p/x.backup.manifest.json" }, "manifests in the first batch")
  t.eq(calls[2].keys, { "p/x.backup.manifest.json.minisig", "p/x.backup" }, "then signature and archive")
end)

t.test("bucket: same rules, one listing pass, deletes in batches, stale uploads aborted", function()
  local proxy <close> = s3proxy.start()
  require("harness.s3").make_bucket("prune")
  local opts = proxy:opts()
  local st = bucket_store("s3://prune/p/", opts)
  local n = populate(st)
  local c = s3.client(opts)
  local stale = c:create_upload("s3://prune/p/" .. naming.archive_name(stamp(0, 2), "prod", ".zst"))
  h.run({ "sleep", "1.1" })
  local before = proxy:stats().ops
  local env = proxy:env()
  -- Everything in the bucket is new: a grace of 0h makes the incomplete ones stale.
  local r = run({ "prune", st.dest, "--keep-daily", "3", "--grace", "0h" }, { env = env })
  t.eq(r.code, 0, "prune: " .. r.stderr)
  t.match(r.stdout, "pruned s3://prune/p/: 9 backups kept, 10 removed; %d+ incomplete or temporary files removed, 1 "
    .. "unfinished uploads aborted", "summary")
  local ops = {}
  for op, count in pairs(proxy:stats().ops) do
    if count - (before[op] or 0) > 0 then ops[op] = count - (before[op] or 0) end
  end
  t.eq(ops.ListObjectsV2, 1, "one listing page")
  t.eq(ops.ListMultipartUploads, 1, "one upload listing")
  -- The lock is read three times (before and after taking it, before
  -- releasing it) and deleted on release; the manifests read are the
  -- newest of each suffix.
  t.eq(ops.GetObject, 3 + 3, "manifests read: one per group (prod, staging, prod's roles), not per backup")
  t.eq(ops.DeleteObjects, 3, "batched deletes: manifests, then archives and signatures, then the rest")
  t.eq(ops.DeleteObject, 1, "no single deletes but the lock's")
  t.eq(ops.AbortMultipartUpload, 1, "the stale upload aborted")
  t.ok(st.exists(n.prod[1]) and st.exists(n.prod[3]) and not st.exists(n.prod[4]), "prod pruned")
  t.ok(not st.exists(n.old_orphan) and not st.exists(n.young_orphan), "orphans gone (grace 0h)")
  t.ok(st.exists(n.reserved_orphan) == false, "a stale reservation no longer protects")
  t.ok(stale ~= nil, "upload created")
end)

t.test("the environment's settings and lock: rules from the file; a running nightly blocks a prune", function()
  local d = h.tmpdir()
  local st = dir_store(d .. "/b")
  local n = populate(st)
  h.write(d .. "/pgvault.conf.lua", string.format([[
environment "prod" { to = %q, keep_last = 2, grace = "1h" }
]], st.dest))
  local r = run({ "prune", "--env", "prod", "--dry-run" }, { cwd = d })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "\nremove +" .. n.prod[3]:gsub("%p", "%%%0") .. " ", "keep_last 2 from the file")
  t.match(r.stderr, "keep 2 last", "the rules are logged")
  local lock = require "lib.lock"
  local held = lock.acquire { to = st.dest, env = "prod", command = "nightly" }
  r = run({ "prune", "--env", "prod" }, { cwd = d })
  t.eq(r.code, 1, "refused")
  t.match(r.stderr, "environment prod is locked by another run: host [^,]+, pid %d+, nightly since", "names the holder")
  t.ok(st.exists(n.prod[3]), "nothing removed")
  t.eq(run({ "prune", "--env", "prod", "--dry-run" }, { cwd = d }).code, 0, "a dry run needs no lock")
  held:release()
  t.eq(run({ "prune", "--env", "prod" }, { cwd = d }).code, 0, "runs once the lock is free")
  t.ok(not st.exists(n.prod[3]), "removed")
end)

t.test("bad input: a bad duration is a usage error; a missing directory says so", function()
  local r = run({ "prune", h.tmpdir(), "--keep-within", "2 weeks" })
  t.eq(r.code, 2, "usage")
  t.match(r.stderr, "%-%-keep%-within must be a duration", "says which flag")
  r = run({ "prune", "/nonexistent/backups", "--keep-last", "1" })
  t.eq(r.code, 1, "missing")
  t.match(r.stderr, "no such directory", "says so")
  t.eq(retention.seconds("24h", "grace"), 86400, "grace in seconds")
end)

t.test("--trust: the newest must be signed by a trusted key; forged newer backups get no real one pruned", function()
  local trust = require "lib.trust"
  local stream = require "pgvault.stream"
  local keys = h.tmpdir()
  local pub = trust.keygen(keys .. "/k").pub_path
  local key <close> = trust.signing_key(keys .. "/k")
  local X = stream.run({ stream.string("x"), stream.sha256(), stream.discard() }).sha256.sha256
  local st = dir_store(h.tmpdir() .. "/b")
  local function backup(days_ago, signed)
    local name = naming.archive_name(stamp(days_ago), "prod", ".zst")
    local text = manifest.encode(manifest.new { environment = "prod", database = "app",
      stored = { name = name, bytes = 1, sha256 = X, block_size = 4096, blocks = { X } } })
    st.put(name, "x", days_ago * DAY)
    st.put(name .. naming.MANIFEST_SUFFIX, text, days_ago * DAY)
    if signed then st.put(name .. ".manifest.json.minisig", trust.signature(key, text, name), days_ago * DAY) end
    return name
  end
  local older, real = backup(3, true), backup(2, true)
  -- what whoever can write the destination adds: newer, unsigned
  local forged1, forged0 = backup(1, false), backup(0, false)
  local r = run({ "prune", st.dest, "--keep-last", "1", "--dry-run" })
  t.match(r.stdout, "keep%s+" .. forged0:gsub("%p", "%%%0"), "without --trust the newest forgery counts: "
    .. r.stdout)
  r = run({ "prune", st.dest, "--keep-last", "1", "--trust", pub, "--dry-run" })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "keep%s+" .. real:gsub("%p", "%%%0") .. "%s+last", "the newest signed backup is the newest")
  t.match(r.stdout, "leave%s+" .. forged0:gsub("%p", "%%%0") .. "%s+not signed by a trusted key", r.stdout)
  r = run({ "prune", st.dest, "--keep-last", "1", "--trust", pub })
  t.eq(r.code, 0, r.stderr)
  t.ok(st.exists(real) and st.exists(real .. naming.MANIFEST_SUFFIX), "kept")
  t.ok(not st.exists(older), "the older one goes by the rule")
  t.ok(st.exists(forged0) and st.exists(forged1), "the forgeries are left for you to inspect")
  -- the same from the configuration's trust key (nightly's prune step reads it too)
  h.write(st.dest .. "/../pgvault.conf.lua", string.format(
    "environment 'prod' { to = %q, keep_last = 1, trust = %q }\n", st.dest, pub))
  r = run({ "prune", "--config", st.dest .. "/../pgvault.conf.lua", "--env", "prod", "--dry-run" })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "keep%s+" .. real:gsub("%p", "%%%0") .. "%s+last", "trust from the file: " .. r.stdout)
end)
