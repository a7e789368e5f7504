-- bench/scale: the scale rows of issue 14, each pgvault against its peer in
-- one run, best of three interleaved rounds (PGVAULT_BENCH_ROUNDS), with
-- the peak RSS of the pgvault process itself (its pg_dump / pg_restore
-- children are not counted; the target is < 64 MiB) and the load average:
--   rows     backup, verify and restore of 0.5, 2 and 5 GB databases of
--            realistic rows (PGVAULT_BENCH_SIZES, MB, comma-separated), and
--            the exponent of wall time against size (1.0 is linear)
--   special  2,000 tables; 100,000 large objects; one 1 GB row
-- Peers: backup `pg_dump -Fc`; verify `zstd -dc | pg_restore -f /dev/null`
-- on pgvault's own .zst; restore `pg_restore -d` of the pg_dump -Fc file
-- into a database made beforehand (untimed; pgvault's restore makes its
-- own, inside its time).
-- The datasets are built on demand and kept (bench/lib/scale.lua).
-- Usage: bin/pgvault run bench/scale.lua [rows|special|all]   (default all)
--        bin/pgvault run bench/scale.lua --drop   (remove the kept datasets)
package.path = "tests/?.lua;bench/?.lua;" .. package.path
local bench = require "lib.bench"
local scale = require "lib.scale"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"

local what = arg and arg[1] or "all"
if what == "--drop" then
  scale.drop()
  print("removed " .. scale.dir)
  return
end
local rounds = tonumber(os.getenv("PGVAULT_BENCH_ROUNDS")) or 3
local sizes = {}
for mb in (os.getenv("PGVAULT_BENCH_SIZES") or "512,2048,5120"):gmatch("%d+") do sizes[#sizes + 1] = tonumber(mb) end

local pg, stop = scale.start()
local work = fs.tmpdir("pgvault-bench-scale")
local env = { PGPASSWORD = pg.password }
local conn = { "-h", "127.0.0.1", "-p", tostring(math.tointeger(pg.port)), "-U", pg.user }

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

-- The rows of one database: backup, verify, restore, each contender once
-- per round, rounds interleaved. Returns the best of each.
local function rows_of(db, label)
  local best, keep = bench.best()
  local dir = work .. "/" .. db
  local peer_file = dir .. "/peer.dump"
  local zst
  local loads = {}
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
      loads[#loads + 1] = bench.load()
    end),
    settled(function()
      fs.mkdir_p(dir)
      os.remove(peer_file)
      keep("backup peer", bench.must(bench.measure(pg_tool("pg_dump", "-Fc", "-f", peer_file, "-d", db),
        { env = env }), "pg_dump -Fc"))
    end),
  }
  bench.rounds(runs, rounds)
  bench.measure({ "cat", zst }) -- the page cache holds it for both readers
  runs = {
    function() keep("verify", bench.must(bench.measure_self({ bench.bin, "-q", "verify", zst }), "pgvault verify")) end,
    function()
      keep("verify peer", bench.must(bench.measure_sh(string.format("zstd -dc '%s' | '%s/pg_restore' -f /dev/null",
        zst, pg.bindir)), "zstd -dc | pg_restore"))
    end,
  }
  bench.rounds(runs, rounds)
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
  for _, op in ipairs({ "backup", "verify", "restore" }) do
    bench.row(string.format("%-9s %s", label, op), best[op], best[op .. " peer"])
  end
  print(string.format("  archive %.1f MiB (.zst) vs %.1f MiB (pg_dump -Fc); load %s", bench.size(zst) / 1048576,
    bench.size(peer_file) / 1048576, table.concat(loads, " | ")))
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

local function scale_rows()
  local results, bytes = {}, {}
  for _, mb in ipairs(sizes) do
    print(string.format("-- %d MB of rows (%s in %s), load %s", mb, disk(), scale.dir, bench.load()))
    local db = scale.rows(pg, mb)
    bytes[#bytes + 1] = tonumber(bench.psql(pg, db, "SELECT pg_database_size(current_database());"))
    results[#results + 1] = rows_of(db, mb .. " MB")
  end
  if #sizes < 2 then return end
  print("-- wall time against database size: exponent (1.00 = linear), worst pgvault RSS")
  for _, op in ipairs({ "backup", "verify", "restore" }) do
    local ours, peers, rss = {}, {}, 0
    for i, r in ipairs(results) do
      ours[i], peers[i] = r[op].seconds, r[op .. " peer"].seconds
      rss = math.max(rss, r[op].rss_kb)
    end
    print(string.format("%-8s pgvault %.2f | peer %.2f | pgvault peak RSS %.1f MiB (< 64: %s)", op,
      exponent(bytes, ours), exponent(bytes, peers), rss / 1024, rss < 64 * 1024 and "met" or "NOT met"))
  end
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
  print("caveat: a 2-core machine shared with other work: compare the ratios, not the seconds")
end)
pcall(fs.remove_tree, work)
stop()
if not ok then
  io.stderr:write("bench failed: " .. tostring(err) .. "\n")
  os.exit(1)
end
