-- bench/scale: the scale rows of issue 14, each pgvault against its peer in
-- one run, best of three interleaved rounds (PGVAULT_BENCH_ROUNDS), with
-- the peak RSS of the pgvault process itself (its pg_dump / pg_restore
-- children are not counted; the target is < 64 MiB) and the load average:
--   rows     backup, verify, restore and nightly of 0.5, 2 and 5 GB
--            databases of realistic rows (PGVAULT_BENCH_SIZES, MB,
--            comma-separated), and the exponent of wall time against size
--            (1.0 is linear)
--   special  2,000 tables; 100,000 large objects; one 1 GB row
--   exponent only the exponents, from the results file (below)
-- Peers: backup `pg_dump -Fc`; verify `zstd -dc | pg_restore -f /dev/null`
-- on pgvault's own .zst; restore `pg_restore -d` of the pg_dump -Fc file
-- into a database made beforehand (untimed; pgvault's restore makes its
-- own, inside its time); nightly (backup, read-back verify of the bucket
-- copy, prune; into a throwaway RADOS Gateway, as bench/nightly.lua)
-- `pg_dump -Fc` to a file, then `aws s3 cp` (PGVAULT_BENCH_NIGHTLY=0 skips
-- nightly; PGVAULT_BENCH_OPS=nightly runs nightly alone).
-- Each size's best times are appended to rows-results.txt in the data
-- directory under a label (PGVAULT_BENCH_LABEL, default the commit), so
-- sizes measured by separate runs (one size per run under the bench lock)
-- give one exponent: the newest result of each size with that label.
-- The datasets are built on demand and kept (bench/lib/scale.lua).
-- Usage: bin/pgvault run bench/scale.lua [rows|special|exponent|all]   (default all)
--        bin/pgvault run bench/scale.lua --drop   (remove the kept datasets)
package.path = "tests/?.lua;bench/?.lua;" .. package.path
local bench = require "lib.bench"
local scale = require "lib.scale"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local s3 = require "pgvault.s3"
local services = require "harness.services"
local rgw = require "harness.rgw"

local what = arg and arg[1] or "all"
if what == "--drop" then
  scale.drop()
  print("removed " .. scale.dir)
  return
end
local rounds = tonumber(os.getenv("PGVAULT_BENCH_ROUNDS")) or 3
local sizes = {}
for mb in (os.getenv("PGVAULT_BENCH_SIZES") or "512,2048,5120"):gmatch("%d+") do sizes[#sizes + 1] = tonumber(mb) end

local nightly_on = os.getenv("PGVAULT_BENCH_NIGHTLY") ~= "0"
local only_nightly = os.getenv("PGVAULT_BENCH_OPS") == "nightly"
local results_file = scale.dir .. "/rows-results.txt"
local run_label = os.getenv("PGVAULT_BENCH_LABEL")
if not run_label then
  local r = proc.run({ "git", "rev-parse", "--short", "HEAD" })
  run_label = r.code == 0 and r.stdout:match("%S+") or "unlabelled"
end

-- The cluster (not for `exponent`, which only reads the results file).
local pg, stop = nil, function() end
if what ~= "exponent" then pg, stop = scale.start() end
local work = fs.tmpdir("pgvault-bench-scale")
local env = { PGPASSWORD = pg and pg.password }
local conn = pg and { "-h", "127.0.0.1", "-p", tostring(math.tointeger(pg.port)), "-U", pg.user }

local function pg_tool(name, ...)
  local argv = { pg.bindir .. "/" .. name }
  for _, a in ipairs(conn) do argv[#argv + 1] = a end
  for _, a in ipairs({ ... }) do argv[#argv + 1] = a end
  return argv
end

local function disk()
  local r = proc.run({ "df", "-h", "--output=avail", scale.dir })
  return (r.stdout:match("\n%s*(%S+)") or "?") .. " free"
end

-- The S3 server of the nightly rows, started at the first of them.
local bucket
local function s3_server()
  if bucket then return bucket end
  local base = fs.tmpdir("pgvault-bench-scale-s3")
  fs.chmod(base, 493)
  local d, stop_s3 = services.start_s3(base)
  local opts = { endpoint_url = d.endpoint, region = d.region, access_key_id = d.access_key,
    secret_access_key = d.secret_key }
  s3.create_bucket("s3://scale", opts)
  bucket = { client = s3.client(opts), desc = d, stop = function()
    stop_s3()
    pcall(fs.remove_tree, base)
  end, env = { AWS_ACCESS_KEY_ID = d.access_key, AWS_SECRET_ACCESS_KEY = d.secret_key, AWS_REGION = d.region,
    AWS_DEFAULT_REGION = d.region, AWS_ENDPOINT_URL = d.endpoint, AWS_PROFILE = false,
    AWS_CONFIG_FILE = "/nonexistent", AWS_SHARED_CREDENTIALS_FILE = "/nonexistent", PGPASSWORD = pg.password },
    endpoint = d.endpoint }
  return bucket
end

-- Empties the bucket (untimed): the server keeps objects in RAM (memstore,
-- 4 GiB), so at most one archive of the 5 GB database is held at a time.
-- RGW frees a deleted object's data only at its garbage collection (hours
-- later by default), so that is run now: without it the second 2.3 GB
-- upload of the 5 GB rows filled the store and stalled (read timeouts).
local function empty_bucket(b)
  local keys = {}
  for _, o in ipairs(b.client:list("s3://scale/")) do keys[#keys + 1] = o.key end
  if #keys > 0 then b.client:delete_many("s3://scale/", keys) end
  rgw.admin(b.desc, { "gc", "process", "--include-all" })
end

-- nightly of `db` against pg_dump -Fc && aws s3 cp, `rounds` interleaved
-- rounds, each run's best kept with `keep`.
local function nightly_of(db, dir, keep)
  local b = s3_server()
  local url = string.format("postgresql://%s@127.0.0.1:%d/%s", pg.user, math.tointeger(pg.port), db)
  local peer_file = dir .. "/nightly-peer.dump"
  fs.mkdir_p(dir)
  local function before()
    empty_bucket(b)
    bench.settle(pg)
  end
  bench.rounds({
    function()
      before()
      keep("nightly", bench.must(bench.measure_self({ bench.bin, "-q", "nightly", "--db", url, "--to",
        "s3://scale/nightly/", "--suffix", "scale", "--keep-last", "1", "--drill-every", "never" }, { env = b.env }),
        "pgvault nightly"))
    end,
    function()
      before()
      keep("nightly peer", bench.must(bench.measure_sh(string.format(
        "'%s/pg_dump' -Fc -f '%s' '%s' && /usr/bin/aws s3 cp '%s' " ..
        "s3://scale/seed/$(date -u +%%Y%%m%%d%%H%%M%%S).dump --only-show-errors --endpoint-url '%s' && rm -f '%s'",
        pg.bindir, peer_file, url, peer_file, b.endpoint, peer_file), { env = b.env }), "pg_dump -Fc && aws s3 cp"))
    end,
  }, rounds)
  empty_bucket(b)
end

-- The rows of one database: backup, verify, restore (and nightly), each
-- contender once per round, rounds interleaved; each operation's row is
-- printed, and given to `done(op, ours)` (ours.peer: the peer's), as soon
-- as its rounds are over. Returns the best of each.
local function rows_of(db, label, with_nightly, done)
  local best, keep = bench.best()
  local dir = work .. "/" .. db
  local peer_file = dir .. "/peer.dump"
  local zst
  local function finished(op)
    local load = bench.load()
    bench.row(string.format("%-9s %s", label, op), best[op], best[op .. " peer"])
    print("  load after the rounds: " .. load)
    io.stdout:flush()
    best[op].load, best[op].peer = load, best[op .. " peer"]
    if done then done(op, best[op]) end
  end
  -- backup, verify and restore (PGVAULT_BENCH_OPS=nightly leaves them out)
  local function file_rows()
    local function settled(f)
      return function()
        bench.settle(pg)
        f()
      end
    end
    local runs = {
      settled(function()
        pcall(fs.remove_tree, dir .. "/ours")
        fs.mkdir_p(dir .. "/ours")
        local r = keep("backup", bench.must(bench.measure_self({ bench.bin, "-q", "backup", "--db",
          bench.url(pg, db), "--to", dir .. "/ours" }), "pgvault backup"))
        zst = r.stdout:match("([^\n]+)\n$") or zst
      end),
      settled(function()
        fs.mkdir_p(dir)
        os.remove(peer_file)
        keep("backup peer", bench.must(bench.measure(pg_tool("pg_dump", "-Fc", "-f", peer_file, "-d", db),
          { env = env }), "pg_dump -Fc"))
      end),
    }
    bench.rounds(runs, rounds)
    finished("backup")
    bench.measure({ "cat", zst }) -- the page cache holds it for both readers
    runs = {
      function()
        keep("verify", bench.must(bench.measure_self({ bench.bin, "-q", "verify", zst }), "pgvault verify"))
      end,
      function()
        keep("verify peer", bench.must(bench.measure_sh(string.format("zstd -dc '%s' | '%s/pg_restore' -f /dev/null",
          zst, pg.bindir)), "zstd -dc | pg_restore"))
      end,
    }
    bench.rounds(runs, rounds)
    finished("verify")
    local function drop(name) bench.admin_psql(pg, "DROP DATABASE IF EXISTS " .. name .. " WITH (FORCE);") end
    runs = {
      settled(function()
        keep("restore", bench.must(bench.measure_self({ bench.bin, "-q", "restore", zst, "--db",
          bench.url(pg, db .. "_r") }), "pgvault restore"))
        drop(db .. "_r")
      end),
      settled(function()
        bench.admin_psql(pg, "CREATE DATABASE " .. db .. "_p OWNER " .. pg.user .. " TEMPLATE template0;")
        keep("restore peer", bench.must(bench.measure(pg_tool("pg_restore", "--exit-on-error", "-d", db .. "_p",
          peer_file), { env = env }), "pg_restore -d"))
        drop(db .. "_p")
      end),
    }
    bench.rounds(runs, rounds)
    finished("restore")
  end
  if not only_nightly then file_rows() end
  if with_nightly then
    nightly_of(db, dir, keep)
    finished("nightly")
  end
  if zst then
    print(string.format("  archive %.1f MiB (.zst) vs %.1f MiB (pg_dump -Fc)", bench.size(zst) / 1048576,
      bench.size(peer_file) / 1048576))
  end
  pcall(fs.remove_tree, dir)
  return best
end

-- Least-squares slope of log(time) against log(size): 1.0 is linear.
local function exponent(xs, ys)
  local n, mx, my = #xs, 0, 0
  for i = 1, n do
    mx, my = mx + math.log(xs[i]) / n, my + math.log(ys[i]) / n
  end
  local num, den = 0, 0
  for i = 1, n do
    num = num + (math.log(xs[i]) - mx) * (math.log(ys[i]) - my)
    den = den + (math.log(xs[i]) - mx) ^ 2
  end
  return den > 0 and num / den or 0 / 0
end

-- Appends the best result of one operation on one size to the results file.
local function record(mb, bytes, op, r)
  local f = assert(io.open(results_file, "a"))
  f:write(string.format("%s\t%d\t%d\t%s\t%.2f\t%.2f\t%d\t%s\t%s\t%.2f\t%.2f\n", run_label, mb, bytes, op,
    r.seconds, r.peer.seconds, r.rss_kb, r.load or "?", os.date("!%Y-%m-%dT%H:%M:%SZ"), r.cpu or 0, r.peer.cpu or 0))
  f:close()
end

-- The newest result of each size and operation under this label, from the
-- results file: { [op] = { [mb] = {bytes, ours, peer, rss_kb, cpu, peer_cpu} } }
-- (CPU seconds, user + system with children, from lines that have them).
local function recorded()
  local by_op = {}
  local f = io.open(results_file, "r")
  if not f then return by_op end
  for line in f:lines() do
    local l, mb, bytes, op, ours, peer, rss = line:match("^([^\t]+)\t(%d+)\t(%d+)\t(%a+)\t([%d.]+)\t([%d.]+)\t(%d+)")
    local cpu, peer_cpu = line:match("\t[^\t]*\t[^\t]*\t([%d.]+)\t([%d.]+)$")
    if l == run_label then
      by_op[op] = by_op[op] or {}
      by_op[op][tonumber(mb)] = { bytes = tonumber(bytes), ours = tonumber(ours), peer = tonumber(peer),
        rss_kb = tonumber(rss), cpu = tonumber(cpu), peer_cpu = tonumber(peer_cpu) }
    end
  end
  f:close()
  return by_op
end

local function print_exponents()
  local by_op = recorded()
  print(string.format("-- wall time against database size (label %s, %s): exponent (1.00 = linear), " ..
    "worst pgvault RSS", run_label, results_file))
  for _, op in ipairs({ "backup", "verify", "restore", "nightly" }) do
    local mbs = {}
    for mb in pairs(by_op[op] or {}) do mbs[#mbs + 1] = mb end
    table.sort(mbs)
    if #mbs >= 2 then
      local bytes, ours, peers, cpus, peer_cpus, rss = {}, {}, {}, {}, {}, 0
      for i, mb in ipairs(mbs) do
        local r = by_op[op][mb]
        bytes[i], ours[i], peers[i], rss = r.bytes, r.ours, r.peer, math.max(rss, r.rss_kb)
        cpus[#cpus + 1], peer_cpus[#peer_cpus + 1] = r.cpu, r.peer_cpu
      end
      -- On a shared machine CPU seconds follow the work more closely than wall time.
      local cpu = #cpus == #mbs and string.format(" | CPU time: pgvault %.2f, peer %.2f", exponent(bytes, cpus),
        exponent(bytes, peer_cpus)) or ""
      print(string.format("%-8s pgvault %.2f | peer %.2f | sizes %s MB | pgvault peak RSS %.1f MiB (< 64: %s)%s", op,
        exponent(bytes, ours), exponent(bytes, peers), table.concat(mbs, ","), rss / 1024,
        rss < 64 * 1024 and "met" or "NOT met", cpu))
    else
      print(string.format("%-8s fewer than two sizes recorded", op))
    end
  end
end

local function scale_rows()
  for _, mb in ipairs(sizes) do
    print(string.format("-- %d MB of rows (%s in %s), load %s", mb, disk(), scale.dir, bench.load()))
    local db = scale.rows(pg, mb)
    local bytes = tonumber(bench.psql(pg, db, "SELECT pg_database_size(current_database());"))
    rows_of(db, mb .. " MB", nightly_on, function(op, r) record(mb, bytes, op, r) end)
  end
  print_exponents()
end

local function special()
  for _, case in ipairs({
    { "2,000 tables", function() return scale.tables(pg, 2000) end },
    { "100,000 LOs", function() return scale.large_objects(pg, 100000) end },
    { "one 1 GB row", function() return scale.big_row(pg) end },
  }) do
    print(string.format("-- %s (%s), load %s", case[1], disk(), bench.load()))
    local best = rows_of(case[2](), case[1])
    local rss = math.max(best.backup.rss_kb, best.verify.rss_kb, best.restore.rss_kb)
    print(string.format("  pgvault peak RSS %.1f MiB (< 64: %s)", rss / 1024, rss < 64 * 1024 and "met" or "NOT met"))
  end
end

local ok, err = pcall(function()
  print(string.format("scale bench: %d round(s), %s, load %s", rounds, disk(), bench.load()))
  if what == "rows" or what == "all" then scale_rows() end
  if what == "special" or what == "all" then special() end
  if what == "exponent" then print_exponents() end
  print("caveat: a 2-core machine shared with other work: compare the ratios, not the seconds")
end)
pcall(fs.remove_tree, work)
if bucket then bucket.stop() end
stop()
if not ok then
  io.stderr:write("bench failed: " .. tostring(err) .. "\n")
  os.exit(1)
end
