-- bench/pg_query: pgvault.pg fetching a whole table into Lua rows, side by
-- side with psql fetching the same rows (both hold the full result in
-- memory: psql without FETCH_COUNT, pgvault.pg by design), plus the time of
-- collation-check and collation-fix on the same database.
-- Run with `bin/pgvault run bench/pg_query.lua [MB]` (default 100). No
-- target in the issue; read the ratios, not the seconds (shared machine).
package.path = "tests/?.lua;bench/?.lua;" .. package.path
local bench = require "lib.bench"

local mb = tonumber(arg[1]) or 100
local desc, _, stop = bench.services()
local pg = desc.pg
local ok, err = pcall(function()
  local port = math.tointeger(pg.port)
  local size = bench.dataset(pg, "bench", mb)
  local rows = tonumber(bench.psql(pg, "bench", "SELECT count(*) FROM events;"))
  print(string.format("dataset: %.0f MiB, events: %d rows; %d cores shared with other work", size / 1048576, rows,
    tonumber(io.popen("nproc"):read("l"))))
  -- The password travels in the environment only.
  local env = { PGPASSWORD = pg.password, PGV_URL = string.format("postgresql://%s@127.0.0.1:%d/bench", pg.user, port) }
  local sql = "SELECT * FROM events"
  local lua = string.format([[
    local c = require("pgvault.pg").connect(os.getenv("PGV_URL"))
    local rows = c:query(%q)
    local n, sum = 0, 0
    for _, r in ipairs(rows) do n = n + 1; sum = sum + r.customer_id end
    print(n, sum)]], sql)
  -- Warm the cache once.
  bench.must(bench.measure({ pg.bindir .. "/psql", "-X", "-At", "-h", "127.0.0.1", "-p", tostring(port), "-U", pg.user,
    "-d", "bench", "-c", sql, "-o", "/dev/null" }, { env = env }), "warm-up")
  local peer = bench.must(bench.measure({ pg.bindir .. "/psql", "-X", "-At", "-h", "127.0.0.1", "-p", tostring(port),
    "-U", pg.user, "-d", "bench", "-c", sql, "-o", "/dev/null" }, { env = env }), "psql")
  local ours = bench.must(bench.measure({ bench.bin, "-e", lua }, { env = env }), "pgvault.pg")
  local n = tonumber(ours.stdout:match("^(%d+)"))
  if n ~= rows then error("pgvault.pg returned " .. tostring(n) .. " rows, expected " .. rows) end
  bench.row("fetch all rows (query -> Lua)", ours, peer)

  bench.admin_psql(pg, "UPDATE pg_database SET datcollversion = '0.1' WHERE datname = 'bench';")
  local check = bench.measure({ bench.bin, "-q", "collation-check", "--db", env.PGV_URL }, { env = env })
  local fix = bench.must(bench.measure({ bench.bin, "-q", "collation-fix", "--db", env.PGV_URL, "--no-backup" },
    { env = env }), "collation-fix")
  local reindex = bench.must(bench.measure({ pg.bindir .. "/psql", "-X", "-q", "-h", "127.0.0.1", "-p", tostring(port),
    "-U", pg.user, "-d", "bench", "-c", "REINDEX DATABASE bench" }, { env = env }), "REINDEX DATABASE")
  print(string.format("collation-check %.2fs (exit %d); collation-fix --no-backup %.2fs, %.1f MiB peak; "
    .. "for scale, REINDEX DATABASE (every index) %.2fs", check.seconds, check.code, fix.seconds, fix.rss_kb / 1024,
    reindex.seconds))
end)
stop()
if not ok then error(err, 0) end
