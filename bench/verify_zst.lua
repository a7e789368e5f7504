-- bench/verify_zst: `pgvault verify` of a pgvault backup (.zst, with its
-- manifest: stored and plain SHA-256, every block parsed, rows counted)
-- against `zstd -dc FILE | pg_restore -f /dev/null`, which decompresses and
-- reads every block too, on the same backup of a scale dataset (issue 17:
-- target <= 0.8x at 3 GB). Best of three interleaved rounds
-- (PGVAULT_BENCH_ROUNDS), peak RSS, the load average of each round.
-- Also pgvault verify --threads 1 (the pipeline on one thread) for
-- reference.
-- Usage: bin/pgvault run bench/verify_zst.lua [MB]   (default 3072)
package.path = "tests/?.lua;bench/?.lua;" .. package.path
local bench = require "lib.bench"
local scale = require "lib.scale"
local fs = require "pgvault.fs"

local mb = tonumber(arg and arg[1]) or 3072
local rounds = tonumber(os.getenv("PGVAULT_BENCH_ROUNDS")) or 3
local pg, stop = scale.start()
local work = fs.tmpdir("pgvault-bench-verify")
local ok, err = pcall(function()
  local db = scale.rows(pg, mb)
  local b = bench.must(bench.measure({ bench.bin, "-q", "backup", "--db", bench.url(pg, db), "--to", work }),
    "pgvault backup")
  local zst = b.stdout:match("([^\n]+)\n$")
  print(string.format("dataset %s: backup %.1f MiB (.zst), load %s", db, bench.size(zst) / 1048576, bench.load()))
  bench.measure({ "cat", zst }) -- into the page cache for every contender alike
  local best, keep = bench.best()
  local loads = {}
  local runs = {
    function()
      keep("peer", bench.must(bench.measure_sh(string.format("zstd -dc '%s' | '%s/pg_restore' -f /dev/null", zst,
        pg.bindir)), "zstd -dc | pg_restore"))
    end,
    function()
      keep("ours", bench.must(bench.measure({ bench.bin, "-q", "verify", zst }), "pgvault verify"))
      loads[#loads + 1] = bench.load()
    end,
    function()
      keep("ours1", bench.must(bench.measure({ bench.bin, "-q", "verify", "--threads", "1", zst }),
        "pgvault verify --threads 1"))
    end,
  }
  bench.rounds(runs, rounds)
  local ratio = bench.row("verify .zst vs zstd -dc | pg_restore", best.ours, best.peer)
  bench.row("  verify --threads 1 (one thread)", best.ours1, best.peer)
  print(string.format("load during the rounds: %s", table.concat(loads, " | ")))
  print(string.format("target: <= 0.80x -> %s (%.2fx); peak RSS %.1f MiB", ratio <= 0.8 and "met" or "NOT met",
    ratio, best.ours.rss_kb / 1024))
end)
pcall(fs.remove_tree, work)
stop()
if not ok then
  io.stderr:write("bench failed: " .. tostring(err) .. "\n")
  os.exit(1)
end
