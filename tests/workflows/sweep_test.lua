-- covers: scripts/lib/prune.lua scripts/lib/lock.lua
-- What a killed run leaves, and the next run sweeping it (issue 14): a
-- nightly killed (SIGKILL) in the middle of its backup leaves its name
-- reservation and a .partial temporary file in a directory, or its
-- reservation, an unfinished multipart upload and its lock in a bucket.
-- The next nightly (its prune step) or prune removes them at once, since
-- the process that made them is gone, however young they are; a
-- reservation whose process still runs, or that another machine made,
-- keeps protecting its backup until the grace period ends.
local t = require "harness.testing"
local h = require "harness.env"
local children = require "harness.children"
local s3h = require "harness.s3"
local s3proxy = require "harness.s3proxy"
local cjson = require "cjson"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local s3 = require "pgvault.s3"
local lock = require "lib.lock"
local naming = require "lib.naming"

local DB = "sweep_source_test"
local src = h.createdb(DB)
-- About 12 MB uncompressed: parts of 5 MiB are uploaded while the dump runs.
h.psql(src, "CREATE TABLE items AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS note "
  .. "FROM generate_series(1, 150000) g;")

local function names(dir)
  local out = fs.listdir(dir)
  table.sort(out)
  return out
end

local function matching(list, pattern)
  local out = {}
  for _, n in ipairs(list) do if n:match(pattern) then out[#out + 1] = n end end
  return out
end

local function wait_for(what, fn)
  local deadline = proc.now() + 60
  while proc.now() < deadline do
    if fn() then return true end
    proc.sleep(0.05)
  end
  error("timed out waiting for " .. what)
end

-- A claim note (lib.lock.claim_note) whose process is gone: a child that
-- ran and ended.
local function dead_note()
  local child = proc.spawn({ "true" })
  local pid = child:pid()
  child:wait(10)
  child:close()
  local info = cjson.decode(lock.claim_note("reservation"))
  info.pid, info.start = pid, "1"
  return info
end

local function kill9(handle)
  handle:kill("KILL")
  handle:wait(30)
  handle:close()
end

local function step(r, name)
  for _, s in ipairs(cjson.decode(r.stdout).steps) do if s.name == name then return s end end
end

t.test("directory: a nightly killed mid-dump leaves its reservation and .partial; the next nightly sweeps them",
  function()
  local dir = h.tmpdir() .. "/b"
  local release = children.lock_table(DB, "items")
  local handle = children.pgvault({ "nightly", "--db", src, "--to", dir, "--drill-every", "never" }, h.s3().env)
  t.ok(children.find(handle:pid(), "pg_dump", nil, 30), "pg_dump started")
  wait_for("the reservation and the temporary file", function()
    local n = names(dir)
    return #matching(n, "^%..*%.reserved$") == 1 and #matching(n, "%.partial$") == 1
  end)
  kill9(handle)
  release()
  local left = names(dir)
  local reservation, partial = matching(left, "%.reserved$")[1], matching(left, "%.partial$")[1]
  t.ok(reservation and partial, "what the kill left: " .. table.concat(left, " "))
  -- Beside them: a backup in flight in a live process (this one), and one
  -- that another machine reserved a minute ago.
  local live = naming.stem(naming.stamp(os.time() - 60), "live")
  h.write(dir .. "/" .. naming.reservation_name(live), lock.claim_note("reservation"))
  h.write(dir .. "/" .. live .. ".backup.zst", "in flight")
  local other = dead_note()
  other.host = "another-machine"
  local remote = naming.stem(naming.stamp(os.time() - 60), "remote")
  h.write(dir .. "/" .. naming.reservation_name(remote), cjson.encode(other))
  h.write(dir .. "/" .. remote .. ".backup.zst", "in flight")

  local before = names(dir)
  local r = h.pgvault({ "prune", dir, "--dry-run" })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "\nremove +" .. reservation:gsub("%p", "%%%0") .. " +stale reservation: its backup %(pid %d+ on "
    .. "this machine%) is gone\n", "the killed run's reservation goes at once")
  t.match(r.stdout, "\nremove +" .. partial:gsub("%p", "%%%0") .. " +temporary file, its backup %(pid %d+%) is gone",
    "and its temporary file")
  t.match(r.stdout, "\nleave +" .. live .. "%.backup%.zst +no manifest, %dm old: an upload may be in flight",
    "a live process's backup is left")
  t.match(r.stdout, "\nleave +" .. remote .. "%.backup%.zst +no manifest, %dm old", "another machine's too")
  t.eq(names(dir), before, "a dry run changes nothing")

  r = h.pgvault({ "nightly", "--db", src, "--to", dir, "--drill-every", "never", "--json" }, { env = h.s3().env })
  t.eq(r.code, 0, r.stderr)
  t.match(step(r, "prune").detail, "2 leftovers removed", "the prune step swept them")
  local now = names(dir)
  t.eq(matching(now, "%.partial$"), {}, "no temporary file left")
  t.eq(matching(now, "^%.%d.*%.reserved$"), { naming.reservation_name(live), naming.reservation_name(remote) },
    "only the reservations whose process may still run")
  t.eq(#matching(now, "_local%.backup%.zst$"), 1, "the new backup")
end)

t.test("bucket: a nightly killed mid-upload leaves its lock, reservation and upload; the next run takes over "
  .. "the lock and sweeps the rest", function()
  local proxy <close> = s3proxy.start()
  local bucket = s3h.make_bucket("sweep")
  local dest = "s3://" .. bucket .. "/prod/"
  proxy:rules({ { op = "UploadPart", action = "hang" } })
  local args = { "nightly", "--db", src, "--to", dest, "--suffix", "prod", "--compress", "none", "--part-size", "5",
    "--drill-every", "never" }
  local handle = children.pgvault(args, proxy:env())
  wait_for("a multipart upload", function() return #proxy:uploads("open") > 0 end)
  kill9(handle)
  proxy:rules({})
  local c = s3.client(s3h.direct())
  local keys = {}
  for _, o in ipairs(c:list(dest)) do keys[#keys + 1] = o.key:match("[^/]+$") end
  table.sort(keys)
  t.eq(#matching(keys, "^%.pgvault%-prod%.lock$"), 1, "the lock is left: " .. table.concat(keys, " "))
  t.eq(#matching(keys, "^%.%d+_prod%.reserved$"), 1, "and the reservation")
  t.eq(#s3.uploads(dest, s3h.direct()), 1, "and the upload")

  local r = h.pgvault({ "prune", dest, "--dry-run" }, { env = s3h.env() })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "\nremove +%.%d+_prod%.reserved +stale reservation: its backup %(pid %d+ on this machine%) is "
    .. "gone\n", "the reservation")
  t.match(r.stdout, "\nabort +%d+_prod%.backup +unfinished upload: its backup %(pid %d+%) is gone", "the upload")

  args[#args + 1] = "--json"
  r = h.pgvault(args, { env = s3h.env(), timeout = 600 })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "taking over the stale lock s3://sweep/prod/%.pgvault%-prod%.lock of host [^,]+, pid %d+, nightly",
    "the dead run's lock is taken over")
  t.match(step(r, "prune").detail, "1 leftover removed, 1 unfinished upload aborted", "the prune step swept them")
  keys = {}
  for _, o in ipairs(c:list(dest)) do keys[#keys + 1] = o.key:match("[^/]+$") end
  t.eq(matching(keys, "^%."), {}, "no lock, no reservation: " .. table.concat(keys, " "))
  t.eq(#s3.uploads(dest, s3h.direct()), 0, "no upload left (ListMultipartUploads)")
end)

t.test("prune takes over a lock whose holder is gone, and says so", function()
  local bucket = s3h.make_bucket("sweep-lock")
  local dest = "s3://" .. bucket .. "/p/"
  local holder = dead_note()
  holder.command, holder.started, holder.expires, holder.env = "nightly", os.time(), os.time() + 3600, "local"
  s3.put(dest .. ".pgvault-local.lock", cjson.encode(holder), s3h.direct())
  local r = h.pgvault({ "prune", dest, "--keep-last", "1" }, { env = s3h.env() })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "taking over the stale lock .*pid " .. holder.pid, "said")
  t.eq(#s3.list(dest, s3h.direct()), 0, "released: nothing left")
  holder.host = "another-machine"
  s3.put(dest .. ".pgvault-local.lock", cjson.encode(holder), s3h.direct())
  r = h.pgvault({ "prune", dest, "--keep-last", "1" }, { env = s3h.env() })
  t.eq(r.code, 1, "a holder on another machine, not expired: refused")
  t.match(r.stderr, "locked by another run: host another%-machine", "names it")
end)
