-- bench/verify: `pgvault verify` against `pg_restore -f /dev/null` (which
-- also reads and inflates every data block) on the same `pg_dump -Fc`
-- (gzip) archive of a few hundred MB of realistic rows; one run, printing
-- the wall-time ratio and peak RSS. Also the same archive written to a
-- pipe (no data offsets: read in sequence) and the verifier tap alone.
-- Usage: bin/pgvault run bench/verify.lua [MB]   (default 400)
package.path = "bench/?.lua;" .. package.path
local bench = require "lib.bench"

local mb = tonumber(arg and arg[1]) or 400
local desc, work, stop = bench.services()
local ok, err = pcall(function()
  local pg = desc.pg
  io.stdout:write(string.format("building a %d MB dataset ...\n", mb))
  local size = bench.dataset(pg, "bench_verify", mb)
  local file = work .. "/bench.dump"
  local piped = work .. "/bench_pipe.dump"
  local env = { PGPASSWORD = pg.password }
  local conn = { "-h", "127.0.0.1", "-p", tostring(pg.port), "-U", pg.user, "-d", "bench_verify" }
  local argv = { pg.bindir .. "/pg_dump", "-Fc", "-f", file }
  for _, a in ipairs(conn) do argv[#argv + 1] = a end
  bench.must(bench.measure(argv, { env = env }), "pg_dump")
  bench.must(bench.measure_sh(string.format("'%s/pg_dump' -Fc -h 127.0.0.1 -p %d -U '%s' -d bench_verify | cat > '%s'",
    pg.bindir, pg.port, pg.user, piped), { env = env }), "pg_dump | cat")
  print(string.format("database %.0f MB, archive %.1f MB (gzip, pg_dump default level)", size / 1048576,
    bench.size(file) / 1048576))

  -- warm the page cache for both readers alike
  bench.measure({ "cat", file, piped }, {})
  local peer = bench.must(bench.measure({ pg.bindir .. "/pg_restore", "-f", "/dev/null", file }), "pg_restore")
  local ours = bench.must(bench.measure({ bench.bin, "verify", file }), "pgvault verify")
  local ratio = bench.row("verify (file, offsets, threads)", ours, peer)
  local ours1 = bench.must(bench.measure({ bench.bin, "verify", "--threads", "1", file }), "pgvault verify -t1")
  bench.row("verify (file, one thread)", ours1, peer)
  local peer_p = bench.must(bench.measure_sh(string.format("'%s/pg_restore' -f /dev/null < '%s'", pg.bindir, piped)),
    "pg_restore < pipe")
  local ours_p = bench.must(bench.measure_sh(string.format("cat '%s' | '%s' run bench/verify_tap.lua", piped,
    bench.bin), { cwd = bench.root }), "tap")
  bench.row("tap on a pipe (no offsets) vs pg_restore <", ours_p, peer_p)
  -- the tap inside backup: the same backup with and without the verifier
  local backup = require "lib.backup"
  local proc = require "pgvault.proc"
  local url = bench.url(pg, "bench_verify")
  local function timed_backup(verify, to)
    local t0 = proc.now()
    local b = backup.run { db = url, to = work .. "/" .. to, verify = verify }
    return proc.now() - t0, b
  end
  timed_backup(false, "warm")
  local plain_s = timed_backup(false, "no_tap")
  local tap_s, b = timed_backup(true, "tap")
  print(string.format("%-34s with tap %7.2fs | without %7.2fs | extra %+.1f%% (target < 3%%; %d rows checked)",
    "backup (zstd) with the verifier tap", tap_s, plain_s, (tap_s / plain_s - 1) * 100,
    b.manifest.archive.totals.rows))
  print(string.format("target: ratio <= 0.5 -> %s; peak RSS < 32 MiB -> %s (%.1f MiB)",
    ratio <= 0.5 and "met" or "NOT met", ours.rss_kb < 32 * 1024 and "met" or "NOT met", ours.rss_kb / 1024))
  print("caveat: one run on a 2-core machine shared with other work; numbers are indicative")
end)
stop()
if not ok then error(err, 0) end
