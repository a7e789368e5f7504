-- covers: scripts/lib/lock.lua scripts/lib/prune.lua scripts/lib/destination.lua
-- Runs at the same time (issue 14), as separate pgvault processes: two
-- nightly runs of one environment (the second refuses naming the first,
-- or waits for it with --wait; a lock left by a crashed run elsewhere is
-- taken over once it expires, not before); prune while a backup's upload
-- is under way (never removed, whatever --grace); backups of several
-- databases into one directory and one bucket prefix at once (all
-- complete, none overwritten, `list` shows each).
local t = require "harness.testing"
local h = require "harness.env"
local s3h = require "harness.s3"
local s3proxy = require "harness.s3proxy"
local children = require "harness.children"
local cjson = require "cjson"
local proc = require "pgvault.proc"
local s3 = require "pgvault.s3"
local stream = require "pgvault.stream"
local fs = require "pgvault.fs"

local DB = "concurrency_source_test"
local SRC = h.createdb(DB)
-- about 12 MB dumped: a backup to a bucket takes several parts
h.psql(SRC, "CREATE TABLE items AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS note "
  .. "FROM generate_series(1, 150000) g;")
local BUCKET = s3h.make_bucket("concurrency")
local ENV = s3h.env()
t.teardown(function() h.dropdb(DB) end)
-- The proxy's slowed requests keep an upload or a download under way
-- while another command runs; under valgrind every pgvault process is ten
-- to thirty times slower, and so must they be (the slowed command then
-- waits longer than --timeout's default 60 s for an answer).
local SLOW = h.valgrind and 20 or 1

local function wait_done(handle, output, seconds)
  local code = handle:wait(seconds or 300)
  handle:close()
  local out, err = output()
  return { code = code, stdout = out, stderr = err }
end

-- The complete backups under a prefix: { [archive URL] = manifest }, each
-- archive checked against its manifest.
local function backups_in(prefix, opts)
  local out, keys = {}, {}
  for _, o in ipairs(s3.list(prefix, opts)) do keys[o.key:match("[^/]+$")] = true end
  for name in pairs(keys) do
    if name:sub(1, 1) ~= "." and not name:match("%.manifest%.json$") then
      t.ok(keys[name .. ".manifest.json"], name .. " has its manifest")
      local m = cjson.decode(s3.get(prefix .. name .. ".manifest.json", opts))
      local ro = { url = prefix .. name }
      for k, v in pairs(opts) do ro[k] = v end
      t.eq(stream.run { s3.reader(ro), stream.sha256(), stream.discard() }.sha256.sha256, m.stored.sha256,
        name .. " is the archive its manifest describes")
      out[prefix .. name] = m
    end
  end
  return out, keys
end

local function count(map)
  local n = 0
  for _ in pairs(map) do n = n + 1 end
  return n
end

local NIGHTLY = { "nightly", "--db", SRC, "--suffix", "conc", "--drill-every", "never", "--no-readback",
  "--keep-last", "10" }

local function nightly_args(to, ...)
  local a = {}
  for _, v in ipairs(NIGHTLY) do a[#a + 1] = v end
  a[#a + 1] = "--to"
  a[#a + 1] = to
  for _, v in ipairs({ ... }) do a[#a + 1] = v end
  return a
end

t.test("two nightly runs of one environment: the second refuses naming the first; with --wait it runs after",
  function()
    local to = "s3://" .. BUCKET .. "/nightly/"
    -- the first run's pg_dump waits on a table lock: its run holds the
    -- environment's lock meanwhile
    local release = children.lock_table(DB, "items")
    local first, first_out = children.pgvault(nightly_args(to), ENV)
    local ok, err = pcall(function()
      t.ok(children.find(first:pid(), "pg_dump", nil, 60), "the first run is backing up")
      local r = h.pgvault(nightly_args(to), { env = ENV })
      t.eq(r.code, 1, "refused: " .. r.stderr)
      t.match(r.stderr, "environment conc is locked by another run: host [^,]+, pid " .. first:pid()
        .. ", nightly since", "names the holder")
      t.match(r.stderr, "wait for it with %-%-wait", "says how to wait")
      local waiter, waiter_out = children.pgvault(nightly_args(to, "--wait"), ENV)
      -- the waiter says it waits, for the first run by name
      local deadline, said = proc.now() + 60, false
      while proc.now() < deadline and not said do
        local started, _, err = pcall(waiter_out)
        said = started and err:find("waiting for the lock s3://concurrency/nightly/%.pgvault%-conc%.lock "
          .. "held by host [^,]+, pid " .. first:pid()) ~= nil
        if not said then proc.sleep(0.1) end
      end
      t.ok(said, "the waiter waits for the first run: " .. select(3, pcall(waiter_out)))
      release()
      release = nil
      local a = wait_done(first, first_out)
      t.eq(a.code, 0, "the first completes: " .. a.stderr)
      local b = wait_done(waiter, waiter_out)
      t.eq(b.code, 0, "the waiter completes after it: " .. b.stderr)
      t.neq(a.stdout, b.stdout, "two runs")
      local backups, keys = backups_in(to, s3h.direct())
      t.eq(count(backups), 2, "two complete backups")
      t.ok(not keys[".pgvault-conc.lock"], "the lock released")
    end)
    if release then release() end
    if not ok then error(err, 0) end
  end)

t.test("a lock left by a crashed run on another machine: refused until it expires, then taken over", function()
  local to = "s3://" .. BUCKET .. "/crashed/"
  local lock_url = to .. ".pgvault-conc.lock"
  local function leave_lock(expires)
    s3.put(lock_url, cjson.encode({ host = "elsewhere.example", pid = 4242, boot = "another-boot", start = "1",
      started = os.time() - 7200, expires = expires, token = "0123456789abcdef", env = "conc",
      command = "nightly" }), s3h.direct())
  end
  leave_lock(os.time() + 3600)
  local r = h.pgvault(nightly_args(to), { env = ENV })
  t.eq(r.code, 1, "a live lock elsewhere is respected: " .. r.stderr)
  t.match(r.stderr, "locked by another run: host elsewhere%.example, pid 4242", "names it")
  leave_lock(os.time() - 60)
  r = h.pgvault(nightly_args(to), { env = ENV })
  t.eq(r.code, 0, "an expired one is taken over: " .. r.stderr)
  t.match(r.stderr, "taking over the stale lock " .. lock_url:gsub("%p", "%%%0") .. " of host elsewhere%.example",
    "says so")
  local backups, keys = backups_in(to, s3h.direct())
  t.eq(count(backups), 1, "the backup")
  t.ok(not keys[".pgvault-conc.lock"], "and the lock released")
end)

t.test("prune never removes a backup whose upload is under way, whatever --grace", function()
  local proxy <close> = s3proxy.start()
  local to = "s3://" .. BUCKET .. "/inflight/"
  -- a complete older backup, which --keep-last 1 would remove in favour of
  -- the newest complete one: itself
  local r = h.pgvault({ "backup", "--db", SRC, "--to", to, "--suffix", "conc" }, { env = ENV })
  t.eq(r.code, 0, r.stderr)
  local older = r.stdout:match("(s3://%S+)\n?$")
  proxy:rules({ { op = "UploadPart", action = "slow", ms = 2500 * SLOW } })
  local backup, backup_out = children.pgvault({ "backup", "--db", SRC, "--to", to, "--suffix", "conc",
    "--compress", "none", "--part-size", "5", "--parallel", "1", "--timeout", "600" }, proxy:env())
  local deadline = proc.now() + 120
  while proc.now() < deadline and (proxy:stats().ops.UploadPart or 0) < 1 do proc.sleep(0.05) end
  t.ok((proxy:stats().ops.UploadPart or 0) >= 1, "the upload is under way")
  local uploads = s3h.open_uploads(BUCKET, "inflight/")
  t.eq(#uploads, 1, "one unfinished upload")
  for _, grace in ipairs({ "24h", "0h" }) do
    local p = h.pgvault({ "prune", to, "--keep-last", "1", "--grace", grace }, { env = ENV })
    t.eq(p.code, 0, "prune --grace " .. grace .. ": " .. p.stderr)
    t.match(p.stdout, "0 unfinished uploads aborted", "--grace " .. grace .. ": the upload is left alone")
    t.eq(#s3h.open_uploads(BUCKET, "inflight/"), 1, "--grace " .. grace .. ": still under way")
  end
  proxy:rules({})
  local b = wait_done(backup, backup_out)
  t.eq(b.code, 0, "the backup completes: " .. b.stderr)
  local newest = b.stdout:match("(s3://%S+)\n?$")
  local backups = backups_in(to, s3h.direct())
  t.ok(backups[newest], "the backup that was under way is complete and whole")
  t.ok(backups[older], "the older one stays: it was the newest complete backup when prune ran")
  t.eq(#s3h.open_uploads(BUCKET, "inflight/"), 0, "no upload left")
end)

-- Four databases, each with rows of its own, backed up at once to `to`
-- under one suffix: their names are taken in the same second or nearly.
local function four_at_once(to, env)
  local locks, runs = {}, {}
  for i = 1, 4 do
    local name = "concurrency_db_" .. i
    local url = h.createdb(name)
    h.psql(url, string.format("CREATE TABLE t AS SELECT g, %d AS who FROM generate_series(1, %d) g;", i, 1000 * i))
    locks[i] = children.lock_table(name, "public.t")
  end
  for i = 1, 4 do
    local handle, output = children.pgvault({ "backup", "--db", h.pg().url("concurrency_db_" .. i), "--to", to,
      "--suffix", "many" }, env)
    runs[i] = { handle = handle, output = output }
  end
  for i = 1, 4 do t.ok(children.find(runs[i].handle:pid(), "pg_dump", nil, 60), "pg_dump " .. i .. " waits") end
  for i = 1, 4 do locks[i]() end
  local paths = {}
  for i = 1, 4 do
    local r = wait_done(runs[i].handle, runs[i].output)
    t.eq(r.code, 0, "backup " .. i .. ": " .. r.stderr)
    paths[i] = r.stdout:match("(%S+)\n?$")
  end
  return paths
end

local function check_four(paths, manifest_of, listing)
  local seen = {}
  for i = 1, 4 do
    t.ok(not seen[paths[i]], "backup " .. i .. " has a name of its own: " .. paths[i])
    seen[paths[i]] = true
    local m = manifest_of(paths[i])
    t.eq(m.database, "concurrency_db_" .. i, "the manifest of " .. paths[i] .. " is database " .. i .. "'s")
    t.eq(m.tables[1].rows, 1000 * i, "its rows, not another's")
  end
  for i = 1, 4 do
    t.match(listing, "concurrency_db_" .. i, "list shows database " .. i)
    t.match(listing, paths[i]:match("[^/]+$"):gsub("%p", "%%%0"), "list shows " .. paths[i])
  end
  for i = 1, 4 do h.dropdb("concurrency_db_" .. i) end
end

t.test("four databases backed up at once into one directory: all complete, none overwritten, list shows each",
  function()
    local d = h.tmpdir() .. "/many"
    local paths = four_at_once(d)
    local names = fs.listdir(d)
    t.eq(#names, 8, "four archives, four manifests, nothing else: " .. table.concat(names, " "))
    local l = h.pgvault({ "list", "--from", d })
    t.eq(l.code, 0, l.stderr)
    check_four(paths, function(p)
      local m = cjson.decode(h.read(p .. ".manifest.json"))
      t.eq(s3h.file_sha256(p), m.stored.sha256, p .. " is whole")
      return m
    end, l.stdout)
  end)

t.test("four databases backed up at once into one bucket prefix: all complete, none overwritten, list shows each",
  function()
    local to = "s3://" .. BUCKET .. "/many/"
    local paths = four_at_once(to, ENV)
    local backups, keys = backups_in(to, s3h.direct())
    t.eq(count(backups), 4, "four complete backups")
    t.eq(count(keys), 8, "and nothing else")
    local l = h.pgvault({ "list", "--from", to }, { env = ENV })
    t.eq(l.code, 0, l.stderr)
    check_four(paths, function(p) return backups[p] end, l.stdout)
  end)

t.test("two restores of one database at once: the second is refused naming the first's session; the first completes",
  function()
    local proxy <close> = s3proxy.start()
    local to = "s3://" .. BUCKET .. "/restores/"
    local r = h.pgvault({ "backup", "--db", SRC, "--to", to, "--suffix", "conc" }, { env = ENV })
    t.eq(r.code, 0, r.stderr)
    local backup = r.stdout:match("(s3://%S+)\n?$")
    local target = "concurrency_restore_test"
    h.dropdb(target)
    local admin = h.pg().admin_url("postgres")
    -- the first restore holds the lock of its target while its downloads
    -- are slowed down
    proxy:rules({ { op = "GetObject", action = "slow", ms = 3000 * SLOW } })
    local first, first_out = children.pgvault({ "restore", backup, "--db", h.pg().url(target), "--timeout", "600" },
      proxy:env())
    local deadline = proc.now() + 120
    while proc.now() < deadline and (proxy:stats().ops.GetObject or 0) < 1 do proc.sleep(0.05) end
    t.ok((proxy:stats().ops.GetObject or 0) >= 1, "the first restore is reading the backup")
    local second = h.pgvault({ "restore", backup, "--db", h.pg().url(target) }, { env = ENV })
    t.eq(second.code, 1, "the second is refused: " .. second.stderr)
    t.match(second.stderr, "pgvault: restore: another pgvault restore of database " .. target .. " is running on "
      .. "this server %(session %d+ of user %S+ from [^,]+, [^,]+, since %d%d%d%d%-%d%d%-%d%d [%d:]+[-+]%d+%): "
      .. "wait for it to finish\n$", "one line naming the first's session")
    t.eq(h.psql(admin, "SELECT count(*) FROM pg_database WHERE datname LIKE '" .. target .. "%';"), "0\n",
      "the second made no database")
    proxy:rules({})
    local a = wait_done(first, first_out)
    t.eq(a.code, 0, "the first completes: " .. a.stderr)
    t.eq(h.psql(h.pg().url(target), "SELECT count(*) FROM items;"), "150000\n", "with every row")
    t.eq(h.psql(admin, "SELECT string_agg(datname, ' ') FROM pg_database WHERE datname LIKE '" .. target .. "%';"),
      target .. "\n", "and no other database")
    h.dropdb(target)
  end)

t.test("a backup into a directory while prune runs there, whatever --grace: the backup under way is left alone",
  function()
    local d = h.tmpdir() .. "/pruned"
    for _ = 1, 2 do
      local r = h.pgvault({ "backup", "--db", SRC, "--to", d, "--suffix", "conc" })
      t.eq(r.code, 0, r.stderr)
    end
    -- the backup's pg_dump waits on a table lock: its reservation and
    -- temporary file are there meanwhile
    local release = children.lock_table(DB, "items")
    local backup, backup_out = children.pgvault({ "backup", "--db", SRC, "--to", d, "--suffix", "conc" })
    local ok, err = pcall(function()
      t.ok(children.find(backup:pid(), "pg_dump", nil, 60), "the backup is under way")
      local deadline, dots = proc.now() + 30
      repeat
        dots = {}
        for _, n in ipairs(fs.listdir(d)) do if n:sub(1, 1) == "." then dots[#dots + 1] = n end end
        if #dots < 2 then proc.sleep(0.05) end
      until #dots >= 2 or proc.now() > deadline
      t.eq(#dots, 2, "its reservation and its temporary file: " .. table.concat(dots, " "))
      local p = h.pgvault({ "prune", d, "--keep-last", "1", "--grace", "0h" })
      t.eq(p.code, 0, p.stderr)
      for _, n in ipairs(dots) do t.ok(fs.exists(d .. "/" .. n), "prune left " .. n .. " alone") end
      release()
      release = nil
      local b = wait_done(backup, backup_out)
      t.eq(b.code, 0, "the backup completes: " .. b.stderr)
      local path = b.stdout:match("(%S+)\n?$")
      local m = cjson.decode(h.read(path .. ".manifest.json"))
      t.eq(s3h.file_sha256(path), m.stored.sha256, "and is whole")
      local names = {}
      for _, n in ipairs(fs.listdir(d)) do
        -- prune's lock: an flock on a file that stays, released
        if n:match("^%.pgvault%-.*%.lock$") then
          t.eq(h.run({ "flock", "--nonblock", d .. "/" .. n, "true" }).code, 0, n .. " released")
        else
          names[#names + 1] = n
        end
      end
      table.sort(names)
      t.eq(#names, 4, "the newest backup prune kept and the one under way, nothing else: " .. table.concat(names, " "))
    end)
    if release then release() end
    if not ok then error(err, 0) end
  end)

t.test("what a restore killed in its swap leaves (the target refusing connections, its new database) is undone "
  .. "by the next restore of that target", function()
    local d = h.tmpdir() .. "/swap"
    local r = h.pgvault({ "backup", "--db", SRC, "--to", d, "--suffix", "conc" })
    t.eq(r.code, 0, r.stderr)
    local target = "concurrency_swap_test"
    local admin = h.pg().admin_url("postgres")
    h.dropdb(target)
    h.psql(admin, "CREATE DATABASE " .. target .. " OWNER " .. h.pg().user .. ";")
    -- the state of a SIGKILL between ALLOW_CONNECTIONS false and true
    local left = target .. "_restore_20260101000000"
    h.psql(admin, "CREATE DATABASE " .. left .. " OWNER " .. h.pg().user .. "; ALTER DATABASE " .. target
      .. " ALLOW_CONNECTIONS false;")
    r = h.pgvault({ "restore", d .. "/latest", "--db", h.pg().url(target), "--database", DB, "--drop-old" })
    t.eq(r.code, 0, r.stderr)
    t.match(r.stderr, "dropping database " .. left .. ", left by a restore of " .. target, "says what it drops")
    t.match(r.stderr, "database " .. target .. " does not accept connections, as a restore killed during its swap "
      .. "leaves it: allowing them again", "and what it undoes")
    t.eq(h.psql(h.pg().url(target), "SELECT count(*) FROM items;"), "150000\n", "the restored database takes "
      .. "connections")
    t.eq(h.psql(admin, "SELECT string_agg(datname, ' ') FROM pg_database WHERE datname LIKE '" .. target .. "%';"),
      target .. "\n", "nothing else left: " .. r.stderr)
    h.dropdb(target)
  end)
