-- pgvault nightly (backup, read-back verify of the bucket copy, prune)
-- against the seed's nightly procedure (pg_dump -Fc to a file, then
-- aws s3 cp) on the same database and local S3 server, side by side:
-- best of several interleaved rounds (PGVAULT_BENCH_ROUNDS, default 3), a
-- database of PGVAULT_BENCH_DB_MB (default 200) realistic rows; target
-- ratio <= 0.5 although pgvault also reads its copy back and prunes.
-- Part 2: prune of a prefix holding PGVAULT_BENCH_BACKUPS (default 10000)
-- backups: one listing pass, time (target < 30 s) and peak RSS (< 64 MiB).
-- `bin/pgvault run bench/nightly.lua`
package.path = "bench/?.lua;" .. package.path
local bench = require "lib.bench"
local s3 = require "pgvault.s3"

local rounds = tonumber(os.getenv("PGVAULT_BENCH_ROUNDS") or "3")
local db_mb = tonumber(os.getenv("PGVAULT_BENCH_DB_MB") or "200")
local many = tonumber(os.getenv("PGVAULT_BENCH_BACKUPS") or "10000")

local desc, work, stop = bench.services()
local ok, err = pcall(function()
  local pg, s3d = desc.pg, desc.s3
  local env = { AWS_ACCESS_KEY_ID = s3d.access_key, AWS_SECRET_ACCESS_KEY = s3d.secret_key,
    AWS_REGION = s3d.region, AWS_DEFAULT_REGION = s3d.region, AWS_ENDPOINT_URL = s3d.endpoint, AWS_PROFILE = false,
    AWS_CONFIG_FILE = "/nonexistent", AWS_SHARED_CREDENTIALS_FILE = "/nonexistent", PGPASSWORD = pg.password }
  local s3opts = { endpoint_url = s3d.endpoint, region = s3d.region, access_key_id = s3d.access_key,
    secret_access_key = s3d.secret_key }
  s3.create_bucket("s3://bench", s3opts)

  if db_mb > 0 then
    local size = bench.dataset(pg, "bench_nightly", db_mb)
    local db = string.format("postgresql://%s@127.0.0.1:%d/bench_nightly", pg.user, pg.port)
    print(string.format("nightly of a %.0f MiB database to a local S3 server, best of %d interleaved rounds",
      size / 1048576, rounds))
    bench.must(bench.measure({ pg.bindir .. "/pg_dump", "-Fc", "-Z0", "--no-sync", "-f", "/dev/null", db },
      { env = env }), "warm-up pg_dump")
    local function ours()
      bench.settle(pg)
      return bench.must(bench.measure({ bench.bin, "-q", "nightly", "--db", db, "--to", "s3://bench/nightly/",
        "--suffix", "bench", "--keep-last", "2", "--drill-every", "never" }, { env = env }), "pgvault nightly")
    end
    local function peer()
      bench.settle(pg)
      return bench.must(bench.measure_sh(string.format(
        "'%s/pg_dump' -Fc -f '%s/seed.dump' '%s' && /usr/bin/aws s3 cp '%s/seed.dump' "
        .. "s3://bench/seed/$(date -u +%%Y%%m%%d%%H%%M%%S).dump --only-show-errors --endpoint-url '%s' && "
        .. "rm -f '%s/seed.dump'", pg.bindir, work, db, work, s3d.endpoint, work), { env = env }),
        "pg_dump -Fc && aws s3 cp")
    end
    local best_ours, best_peer
    for i = 1, rounds do
      -- Alternate which goes first, so that neither always meets a warmer machine.
      local a, b
      if i % 2 == 1 then a = ours(); b = peer() else b = peer(); a = ours() end
      print(string.format("  round %d: pgvault %.2fs (%.1f MiB), old procedure %.2fs", i, a.seconds,
        a.rss_kb / 1024, b.seconds))
      if not best_ours or a.seconds < best_ours.seconds then best_ours = a end
      if not best_peer or b.seconds < best_peer.seconds then best_peer = b end
    end
    local r = bench.row("nightly vs pg_dump -Fc && aws s3 cp", best_ours, best_peer)
    print(string.format("ratio: nightly %.2f (target <= 0.5; pgvault also reads the copy back and prunes); "
      .. "pgvault peak RSS %.1f MiB (target < 64)", r, best_ours.rss_kb / 1024))
  end

  if many > 0 then
    -- A prefix of `many` complete backups, one an hour back from now.
    local c = s3.client(s3opts)
    local now = os.time()
    local manifest = require "lib.manifest"
    local naming = require "lib.naming"
    local t0 = os.time()
    for i = 0, many - 1 do
      local name = naming.archive_name(naming.stamp(now - i * 3600), "many", ".zst")
      c:put("s3://bench/many/" .. name, "x")
      c:put("s3://bench/many/" .. name .. naming.MANIFEST_SUFFIX, manifest.encode(manifest.new {
        environment = "many", database = "app", stored = { name = name, bytes = 1, sha256 = string.rep("a", 64) } }))
    end
    print(string.format("prune of a prefix of %d backups (%d objects; made in %ds)", many, 2 * many, os.time() - t0))
    local args = { bench.bin, "-q", "prune", "s3://bench/many/", "--keep-daily", "7", "--keep-weekly", "4",
      "--keep-monthly", "12" }
    local dry = bench.must(bench.measure((function()
      local a = { table.unpack(args) }
      a[#a + 1] = "--dry-run"
      return a
    end)(), { env = env }), "prune --dry-run")
    local real = bench.must(bench.measure(args, { env = env }), "prune")
    local left = 0
    for _, o in ipairs(c:list("s3://bench/many/")) do if naming.parse(o.key) then left = left + 1 end end
    print(string.format("  prune --dry-run %.2fs, peak RSS %.1f MiB", dry.seconds, dry.rss_kb / 1024))
    print(string.format("  prune           %.2fs, peak RSS %.1f MiB; %d backups left (target < 30 s, < 64 MiB)",
      real.seconds, real.rss_kb / 1024, left))
  end
end)
stop()
if not ok then error(err, 0) end
