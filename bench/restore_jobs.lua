-- bench/restore_jobs: `pgvault restore --jobs 2` of a pgvault backup (zstd,
-- written through a pipe, so without data offsets: restore lays it down as
-- a temporary file, verifies it and fills the offsets) against
-- `pg_restore -j 2` of a `pg_dump -Fc -f` file (offsets written by
-- pg_dump). One run of each, wall time and peak RSS.
-- Usage: bin/pgvault run bench/restore_jobs.lua [MB]   (default 200)
package.path = "bench/?.lua;" .. package.path
local bench = require "lib.bench"

local mb = tonumber(arg and arg[1]) or 200
local desc, work, stop = bench.services()
local ok, err = pcall(function()
  local pg = desc.pg
  bench.dataset(pg, "bench_src", mb)
  local env = { PGPASSWORD = pg.password }
  local file = work .. "/src.dump"
  bench.must(bench.measure({ pg.bindir .. "/pg_dump", "-Fc", "-f", file, "-h", "127.0.0.1", "-p", tostring(pg.port),
    "-U", pg.user, "-d", "bench_src" }, { env = env }), "pg_dump")
  local b = bench.must(bench.measure({ bench.bin, "backup", "--db", bench.url(pg, "bench_src"), "--to", work .. "/b" }),
    "pgvault backup")
  local zst = b.stdout:match("([^\n]+)\n$")
  bench.admin_psql(pg, "CREATE DATABASE r_peer OWNER " .. pg.user .. " TEMPLATE template0;")
  local peer = bench.must(bench.measure({ pg.bindir .. "/pg_restore", "-j", "2", "-h", "127.0.0.1", "-p",
    tostring(pg.port), "-U", pg.user, "-d", "r_peer", file }, { env = env }), "pg_restore -j 2")
  local ours = bench.must(bench.measure({ bench.bin, "restore", zst, "--db", bench.url(pg, "r_ours"), "--jobs", "2" }),
    "pgvault restore --jobs 2")
  bench.row("restore --jobs 2 (.zst, offsets filled)", ours, peer)
  print("caveat: one run on a 2-core machine shared with other work; numbers are indicative")
end)
stop()
if not ok then error(err, 0) end
