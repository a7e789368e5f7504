-- bench/backup_local: pgvault backup and restore side by side with pg_dump
-- and pg_restore on the same database of realistic, poorly compressible
-- rows. Run with `bin/pgvault run bench/backup_local.lua [MB]` (default 300).
-- Prints wall-time ratios, archive sizes and pgvault's peak RSS. Targets
-- (issue 7): default (zstd) <= 0.4x pg_dump -Fc's time with an archive no
-- larger; --compress pg <= 1.05x; peak RSS < 64 MiB; restore <= 1.1x
-- pg_restore -d. One run on a shared machine: read the ratios, not the seconds.
package.path = "tests/?.lua;bench/?.lua;" .. package.path
local bench = require "lib.bench"
local fs = require "pgvault.fs"

local mb = tonumber(arg[1]) or 300
local desc, work, stop = bench.services()
local pg = desc.pg
local ok, err = pcall(function()
  local bin = bench.bin
  local pg_bin = pg.bindir
  local url = bench.url(pg, "bench")
  local env = { PGPASSWORD = pg.password }
  local conn = { "-h", "127.0.0.1", "-p", tostring(math.tointeger(pg.port)), "-U", pg.user }
  local function with_conn(argv)
    local out = { argv[1] }
    for _, a in ipairs(conn) do out[#out + 1] = a end
    for i = 2, #argv do out[#out + 1] = argv[i] end
    return out
  end

  local t0 = os.time()
  local size = bench.dataset(pg, "bench", mb)
  print(string.format("dataset: %.0f MiB in database 'bench' (made in %ds); %d cores shared with other work",
    size / 1048576, os.time() - t0, tonumber(io.popen("nproc"):read("l"))))
  -- Warm the cache so the first measured run is not penalised.
  local warm = work .. "/warm.backup"
  bench.must(bench.measure(with_conn({ pg_bin .. "/pg_dump", "-Fc", "-Z0", "-d", "bench", "-f", warm }),
    { env = env }), "warm-up pg_dump")
  os.remove(warm)

  local peer = bench.must(bench.measure(with_conn({ pg_bin .. "/pg_dump", "-Fc", "-d", "bench", "-f",
    work .. "/peer.backup" }), { env = env }), "pg_dump -Fc")
  local peer_size = bench.size(work .. "/peer.backup")

  local function pgvault_backup(dir, extra)
    local argv = { bin, "-q", "backup", "--db", url, "--to", dir }
    for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
    local r = bench.must(bench.measure(argv), "pgvault backup")
    r.path = r.stdout:match("([^\n]+)\n$")
    return r
  end
  local zst = pgvault_backup(work .. "/zst")
  local gz = pgvault_backup(work .. "/gz", { "--compress", "pg" })

  print(string.format("pg_dump -Fc -f: %.2fs, %.1f MiB", peer.seconds, peer_size / 1048576))
  local r1 = bench.row("backup (zstd, default)", zst, peer)
  print(string.format("  archive %.1f MiB vs %.1f MiB (%.2fx)", bench.size(zst.path) / 1048576,
    peer_size / 1048576, bench.size(zst.path) / peer_size))
  -- For reference: the shell pipeline the default replaces.
  local sh = bench.must(bench.measure_sh(string.format("%s/pg_dump -h 127.0.0.1 -p %d -U %s -Fc -Z0 -d bench | "
    .. "zstd -q -3 -T0 -o %s/sh.backup.zst", pg_bin, math.tointeger(pg.port), pg.user, work), { env = env }),
    "pg_dump | zstd")
  bench.row("  (pg_dump -Fc -Z0 | zstd -3 -T0)", sh, peer)
  local r2 = bench.row("backup --compress pg", gz, peer)
  print(string.format("  archive %.1f MiB vs %.1f MiB (%.2fx)", bench.size(gz.path) / 1048576,
    peer_size / 1048576, bench.size(gz.path) / peer_size))

  -- Restore the same archive (pg_dump's gzip) both ways into a new database,
  -- twice each (best of two): restores swing with the load. A CHECKPOINT
  -- before every timed run and the order reversed in the second round keep
  -- one run from paying for the dirty buffers and WAL the run before it left.
  local function best(a, b) return (a.seconds <= b.seconds) and a or b end
  local rpeer, rours, rzst
  for round = 1, 2 do
    local peer_db, ours_db, zst_db = "restored_peer" .. round, "restored_ours" .. round, "restored_zst" .. round
    bench.admin_psql(pg, "CREATE DATABASE " .. peer_db .. " OWNER " .. pg.user .. " TEMPLATE template0;")
    local runs = {
      function()
        return bench.must(bench.measure(with_conn({ pg_bin .. "/pg_restore", "--exit-on-error", "-d", peer_db,
          gz.path }), { env = env }), "pg_restore -d")
      end,
      function()
        return bench.must(bench.measure({ bin, "-q", "restore", gz.path, "--db", bench.url(pg, ours_db) }),
          "pgvault restore")
      end,
      function()
        return bench.must(bench.measure({ bin, "-q", "restore", zst.path, "--db", bench.url(pg, zst_db) }),
          "pgvault restore .zst")
      end,
    }
    local got = {}
    for k = 1, 3 do
      local i = round == 1 and k or 4 - k
      bench.admin_psql(pg, "CHECKPOINT;")
      got[i] = runs[i]()
    end
    rpeer = rpeer and best(rpeer, got[1]) or got[1]
    rours = rours and best(rours, got[2]) or got[2]
    rzst = rzst and best(rzst, got[3]) or got[3]
    bench.admin_psql(pg, string.format("DROP DATABASE %s; DROP DATABASE %s; DROP DATABASE %s;", peer_db, ours_db,
      zst_db))
  end
  local r3 = bench.row("restore (.backup) vs pg_restore -d", rours, rpeer)
  local r4 = bench.row("restore (.backup.zst, streamed)", rzst, rpeer)

  print("")
  print(string.format("targets: zstd %.2fx (<= 0.40, archive %.2fx <= 1.00); pg %.2fx (<= 1.05); "
    .. "restore %.2fx / %.2fx (<= 1.10); peak RSS %.1f / %.1f MiB (< 64)", r1,
    bench.size(zst.path) / peer_size, r2, r3, r4, zst.rss_kb / 1024, gz.rss_kb / 1024))
  fs.remove_tree(work)
end)
stop()
if not ok then
  io.stderr:write("bench failed: " .. tostring(err) .. "\n")
  os.exit(1)
end
