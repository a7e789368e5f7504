-- bench/restore_stream: `pgvault restore --jobs 2`, which starts while the
-- archive arrives (lib.streamed_restore), against its peers on a scale
-- dataset (issue 17; 3 GB by default):
--   file:   restore --jobs 2 of the backup's .zst  vs  pg_restore -j 2 of the
--           plain archive (decompressed beforehand, data offsets filled:
--           the peer's best case)                            target <= 0.9x
--   bucket: restore --jobs 2 of an encrypted backup straight from the bucket
--           vs the old way: download the object, decrypt and decompress it
--           to a file, pg_restore -j 2                       target <= 0.9x
-- Best of three interleaved rounds (PGVAULT_BENCH_ROUNDS), each into a new
-- database on a settled server; pgvault's own peak RSS (target < 64 MiB
-- plus the spill, 64 MiB by default); the load average of each round.
-- Usage: bin/pgvault run bench/restore_stream.lua [MB] [file|bucket|all]
package.path = "tests/?.lua;bench/?.lua;" .. package.path
local bench = require "lib.bench"
local scale = require "lib.scale"
local archive = require "pgvault.archive"
local fs = require "pgvault.fs"
local services = require "harness.services"

local mb = tonumber(arg and arg[1]) or 3072
local what = arg and arg[2] or "all"
local rounds = tonumber(os.getenv("PGVAULT_BENCH_ROUNDS")) or 3
local pg, stop = scale.start()
local work = fs.tmpdir("pgvault-bench-restore")
fs.chmod(work, 493)
local s3, stop_s3
local env = { PGPASSWORD = pg.password }

local function fresh(name)
  bench.admin_psql(pg, string.format("DROP DATABASE IF EXISTS %s WITH (FORCE);\n" ..
    "CREATE DATABASE %s OWNER %s TEMPLATE template0;", name, name, pg.user))
end

local function drop(name) bench.admin_psql(pg, "DROP DATABASE IF EXISTS " .. name .. " WITH (FORCE);") end

local function pg_restore_j(file, db)
  return string.format("'%s/pg_restore' -j 2 --exit-on-error -h 127.0.0.1 -p %d -U %s -d %s '%s'", pg.bindir,
    math.tointeger(pg.port), pg.user, db, file)
end

local function report(name, best, loads, spill)
  local ratio = bench.row(name, best.ours, best.peer)
  print(string.format("  target <= 0.90x: %s (%.2fx); pgvault peak RSS %.1f MiB (< 64 + %d spill: %s); load %s",
    ratio <= 0.9 and "met" or "NOT met", ratio, best.ours.rss_kb / 1024, spill,
    best.ours.rss_kb < (64 + spill) * 1024 and "met" or "NOT met", table.concat(loads, " | ")))
end

local function from_file(db, zst)
  local plain = work .. "/plain.backup"
  bench.must(bench.measure_sh(string.format("zstd -qdc '%s' > '%s'", zst, plain)), "zstd -d")
  archive.read(plain, { fill_offsets = true })
  local best, keep = bench.best()
  local loads = {}
  bench.rounds({
    function()
      fresh("rs_peer")
      bench.settle(pg)
      keep("peer", bench.must(bench.measure_sh(pg_restore_j(plain, "rs_peer"), { env = env }), "pg_restore -j 2"))
      drop("rs_peer")
    end,
    function()
      drop("rs_ours")
      bench.settle(pg)
      keep("ours", bench.must(bench.measure_self({ bench.bin, "-q", "restore", zst, "--jobs", "2", "--db",
        bench.url(pg, "rs_ours") }), "pgvault restore --jobs 2"))
      loads[#loads + 1] = bench.load()
      drop("rs_ours")
    end,
  }, rounds)
  os.remove(plain)
  report(string.format("restore --jobs 2 .zst (%s)", db), best, loads, 64)
end

local function from_bucket(db)
  local base = work .. "/s3base"
  fs.mkdir_p(base)
  s3, stop_s3 = services.start_s3(base)
  local s3env = { AWS_ACCESS_KEY_ID = s3.access_key, AWS_SECRET_ACCESS_KEY = s3.secret_key, AWS_REGION = s3.region,
    AWS_ENDPOINT_URL = s3.endpoint, AWS_PROFILE = false, AWS_CONFIG_FILE = "/nonexistent",
    AWS_SHARED_CREDENTIALS_FILE = "/nonexistent", PGPASSWORD = pg.password }
  bench.must(bench.measure({ "/usr/bin/aws", "--endpoint-url", s3.endpoint, "--region", s3.region, "s3api",
    "create-bucket", "--bucket", "bench" }, { env = s3env }), "create-bucket")
  local key = work .. "/key.txt"
  local kg = bench.must(bench.measure({ bench.bin, "keygen", "-o", key }), "keygen")
  local recipient = kg.stderr:match("(age1[%w]+)")
  local b = bench.must(bench.measure({ bench.bin, "-q", "backup", "--db", bench.url(pg, db), "--to",
    "s3://bench/b/", "-r", recipient }, { env = s3env }), "pgvault backup to the bucket")
  local url = b.stdout:match("(s3://[^\n]+)\n$")
  local best, keep = bench.best()
  local loads = {}
  local tmp = work .. "/old.backup"
  bench.rounds({
    function()
      fresh("rs_peer")
      bench.settle(pg)
      keep("peer", bench.must(bench.measure_sh(string.format("'%s' -q download '%s' -o '%s.age' && " ..
        "age -d -i '%s' '%s.age' | zstd -qdc > '%s' && rm '%s.age' && %s", bench.bin, url, tmp, key, tmp, tmp, tmp,
        pg_restore_j(tmp, "rs_peer")), { env = s3env }), "download, decrypt, pg_restore -j 2"))
      os.remove(tmp)
      drop("rs_peer")
    end,
    function()
      drop("rs_ours")
      bench.settle(pg)
      keep("ours", bench.must(bench.measure_self({ bench.bin, "-q", "restore", url, "--jobs", "2", "-i", key, "--db",
        bench.url(pg, "rs_ours") }, { env = s3env }), "pgvault restore --jobs 2 from the bucket"))
      loads[#loads + 1] = bench.load()
      drop("rs_ours")
    end,
  }, rounds)
  report(string.format("restore --jobs 2 from the bucket (%s)", db), best, loads, 64)
end

local ok, err = pcall(function()
  print(string.format("restore bench: %d MB, %d round(s), load %s", mb, rounds, bench.load()))
  local db = scale.rows(pg, mb)
  if what == "file" or what == "all" then
    local b = bench.must(bench.measure({ bench.bin, "-q", "backup", "--db", bench.url(pg, db), "--to", work }),
      "pgvault backup")
    from_file(db, b.stdout:match("([^\n]+)\n$"))
  end
  if what == "bucket" or what == "all" then from_bucket(db) end
  print("caveat: a 2-core machine shared with other work: compare the ratios, not the seconds")
end)
if stop_s3 then stop_s3() end
pcall(fs.remove_tree, work)
stop()
if not ok then
  io.stderr:write("bench failed: " .. tostring(err) .. "\n")
  os.exit(1)
end
