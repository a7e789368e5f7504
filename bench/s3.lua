-- pgvault upload / download against `aws s3 cp` (Debian's aws CLI v2) on
-- the same local S3 server (the test harness's, which checks signatures):
-- 1 GiB by default (PGVAULT_BENCH_MB to change), one run each, wall-time
-- ratios (pgvault / aws; target <= 1.0) and peak RSS (target < 64 MiB).
-- Part (2): the whole encrypted backup of a database of realistic rows
-- (PGVAULT_BENCH_DB_MB, default 300) to the bucket, against
-- `pg_dump -Fc -f file && age -r … && aws s3 cp` (target ratio <= 0.35).
-- `bin/pgvault run bench/s3.lua`
package.path = "bench/?.lua;" .. package.path
local bench = require "lib.bench"
local fs = require "pgvault.fs"

local mb = tonumber(os.getenv("PGVAULT_BENCH_MB") or "1024")
local desc, work, stop = bench.services()
local ok, err = pcall(function()
  local s3 = desc.s3
  local env = { AWS_ACCESS_KEY_ID = s3.access_key, AWS_SECRET_ACCESS_KEY = s3.secret_key, AWS_REGION = s3.region,
    AWS_DEFAULT_REGION = s3.region, AWS_ENDPOINT_URL = s3.endpoint, AWS_PROFILE = false,
    AWS_CONFIG_FILE = "/nonexistent", AWS_SHARED_CREDENTIALS_FILE = "/nonexistent" }
  local function aws(args)
    local argv = { "/usr/bin/aws", "--endpoint-url", s3.endpoint, "--region", s3.region }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    return bench.measure(argv, { env = env })
  end
  bench.must(aws({ "s3api", "create-bucket", "--bucket", "bench" }), "create-bucket")
  local parts = os.getenv("PGVAULT_BENCH_PARTS") or "12" -- "2" for the backup comparison only
  local src = work .. "/src.bin"
  if parts:find("1", 1, true) then
    bench.must(bench.measure_sh(string.format(
      "openssl enc -aes-128-ctr -pass pass:bench -nosalt -pbkdf2 -in /dev/zero 2>/dev/null | head -c %d > %s",
      mb * 1024 * 1024, src)), "making the input")
    print(string.format("pgvault s3 benchmark: %d MiB to and from a local S3 server (one run each; shared machine)",
      mb))
    local up = bench.must(bench.measure({ bench.bin, "upload", src, "s3://bench/ours.bin" }, { env = env }),
      "pgvault upload")
    local up_peer = bench.must(aws({ "s3", "cp", src, "s3://bench/theirs.bin" }), "aws s3 cp (upload)")
    local r1 = bench.row("upload", up, up_peer)
    local down = bench.must(bench.measure({ bench.bin, "download", "s3://bench/theirs.bin", "-o",
      work .. "/ours.out" }, { env = env }), "pgvault download")
    local down_peer = bench.must(aws({ "s3", "cp", "s3://bench/ours.bin", work .. "/theirs.out" }),
      "aws s3 cp (download)")
    local r2 = bench.row("download", down, down_peer)
    for _, f in ipairs({ work .. "/ours.out", work .. "/theirs.out" }) do
      if bench.size(f) ~= mb * 1024 * 1024 then error("wrong size downloaded: " .. f) end
  end
  print(string.format("ratios: upload %.2f, download %.2f (target <= 1.0); pgvault peak RSS %.1f / %.1f MiB "
    .. "(target < 64)", r1, r2, up.rss_kb / 1024, down.rss_kb / 1024))
  fs.remove(src)
  end
  if not parts:find("2", 1, true) then return end

  -- (2) The whole encrypted off-site backup: pgvault streams pg_dump -Z0 →
  -- zstd (all cores) → age → multipart upload; the old way runs
  -- pg_dump -Fc to a file, then age, then aws s3 cp, one after the other.
  local db_mb = tonumber(os.getenv("PGVAULT_BENCH_DB_MB") or "300")
  local pg = desc.pg
  local size = bench.dataset(pg, "bench_s3", db_mb)
  local db = string.format("postgresql://%s@127.0.0.1:%d/bench_s3", pg.user, pg.port)
  local penv = { PGPASSWORD = pg.password }
  for k, v in pairs(env) do penv[k] = v end
  bench.must(bench.measure({ "age-keygen", "-o", work .. "/key.txt" }), "age-keygen")
  local pub = bench.must(bench.measure({ "age-keygen", "-y", work .. "/key.txt" }), "age-keygen -y").stdout:match("%S+")
  print(string.format("encrypted backup of a %.0f MiB database to the bucket", size / 1048576))
  -- Warm the cache once (not timed), as bench/backup_local does.
  bench.must(bench.measure({ pg.bindir .. "/pg_dump", "-Fc", "-Z0", "--no-sync", "-f", "/dev/null", db },
    { env = penv }), "warm-up pg_dump")
  bench.settle(pg)
  local ours = bench.must(bench.measure({ bench.bin, "-q", "backup", "--db", db, "--to", "s3://bench/ours/",
    "-r", pub }, { env = penv }), "pgvault backup --to s3://")
  local dump = work .. "/old.dump"
  bench.settle(pg)
  local peer = bench.must(bench.measure_sh(string.format(
    "'%s/pg_dump' -Fc -f '%s' '%s' && age -r '%s' -o '%s.age' '%s' && /usr/bin/aws s3 cp '%s.age' "
    .. "s3://bench/old/old.dump.age --only-show-errors --endpoint-url '%s'", pg.bindir, dump, db, pub, dump, dump,
    dump, s3.endpoint),
    { env = penv }), "pg_dump -Fc && age && aws s3 cp")
  local r3 = bench.row("encrypted backup to S3", ours, peer)
  print(string.format("ratio: encrypted backup %.2f (target <= 0.35); pgvault peak RSS %.1f MiB", r3,
    ours.rss_kb / 1024))
  -- For reference: the same encrypted backup into a local directory, which
  -- shows how much of pgvault's time is the upload to the local S3 server.
  bench.settle(pg)
  local to_dir = bench.must(bench.measure({ bench.bin, "-q", "backup", "--db", db, "--to", work .. "/local",
    "-r", pub }, { env = penv }), "pgvault backup --to DIR")
  print(string.format("reference: the same encrypted backup to a local directory %.2fs (%.2f of the old way); "
    .. "the upload adds %.2fs", to_dir.seconds, to_dir.seconds / peer.seconds, ours.seconds - to_dir.seconds))
end)
stop()
if not ok then error(err, 0) end
