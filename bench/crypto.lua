-- pgvault encrypt / decrypt against age / age -d on the same input (1 GiB
-- by default; PGVAULT_BENCH_MB to change), output to /dev/null, one run
-- each: wall-time ratios (pgvault / age; target <= 0.7) and peak RSS
-- (target < 16 MiB). Then what encryption adds to a backup: pgvault backup
-- with and without -r on the same database (PGVAULT_BENCH_DB_MB, default
-- 200; target < 5%). `bin/pgvault run bench/crypto.lua`
package.path = "bench/?.lua;" .. package.path
local bench = require "lib.bench"
local fs = require "pgvault.fs"

local mb = tonumber(os.getenv("PGVAULT_BENCH_MB") or "1024")
local dir = fs.tmpdir("pgvault-bench-crypto")
local ok, err = pcall(function()
  local plain = dir .. "/plain"
  bench.must(bench.measure_sh(string.format(
    "openssl enc -aes-128-ctr -pass pass:bench -nosalt -pbkdf2 -in /dev/zero 2>/dev/null | head -c %d > %s",
    mb * 1024 * 1024, plain)), "making the input")
  bench.must(bench.measure({ "age-keygen", "-o", dir .. "/key.txt" }), "age-keygen")
  local pub = bench.must(bench.measure({ "age-keygen", "-y", dir .. "/key.txt" }), "age-keygen -y").stdout:match("%S+")
  local enc = dir .. "/plain.age"
  bench.must(bench.measure({ "age", "-r", pub, "-o", enc, plain }), "age (making the encrypted input)")

  print(string.format("pgvault crypto benchmark: %d MiB, output to /dev/null (one run each; shared machine)", mb))
  local enc_ours = bench.must(bench.measure({ bench.bin, "encrypt", "-r", pub, "-o", "/dev/null", plain }),
    "pgvault encrypt")
  local peer = bench.must(bench.measure({ "age", "-r", pub, "-o", "/dev/null", plain }), "age")
  local r1 = bench.row("encrypt (X25519)", enc_ours, peer)
  local ours = bench.must(bench.measure({ bench.bin, "decrypt", "-i", dir .. "/key.txt", "-o", "/dev/null", enc }),
    "pgvault decrypt")
  peer = bench.must(bench.measure({ "age", "-d", "-i", dir .. "/key.txt", "-o", "/dev/null", enc }), "age -d")
  local r2 = bench.row("decrypt (X25519)", ours, peer)
  print(string.format("ratios: encrypt %.2f, decrypt %.2f (target <= 0.7); pgvault peak RSS %.1f / %.1f MiB "
    .. "(target < 16)", r1, r2, enc_ours.rss_kb / 1024, ours.rss_kb / 1024))
end)
pcall(fs.remove_tree, dir)
if not ok then error(err, 0) end

local db_mb = tonumber(os.getenv("PGVAULT_BENCH_DB_MB") or "200")
local desc, work, stop = bench.services()
ok, err = pcall(function()
  local url = bench.url(desc.pg, "bench")
  local size = bench.dataset(desc.pg, "bench", db_mb)
  bench.must(bench.measure({ "age-keygen", "-o", work .. "/key.txt" }), "age-keygen")
  local pub = bench.must(bench.measure({ "age-keygen", "-y", work .. "/key.txt" }), "age-keygen -y").stdout:match("%S+")
  local function backup(sub, extra)
    local argv = { bench.bin, "-q", "backup", "--db", url, "--to", work .. "/" .. sub }
    for _, a in ipairs(extra) do argv[#argv + 1] = a end
    return bench.must(bench.measure(argv), "pgvault backup " .. table.concat(extra, " "))
  end
  -- A backup of this size takes about two seconds and swings by a tenth from
  -- run to run, more than encryption costs: three interleaved rounds, the
  -- fastest of each kind compared.
  backup("warm", {})
  local plain, enc
  for round = 1, 3 do
    local p = backup("plain" .. round, {})
    local e = backup("enc" .. round, { "-r", pub })
    if not plain or p.seconds < plain.seconds then plain = p end
    if not enc or e.seconds < enc.seconds then enc = e end
  end
  print(string.format("backup of a %.0f MiB database (best of 3): %.2fs plain, %.2fs encrypted (%+.1f%%, "
    .. "target < 5%%); peak RSS %.1f / %.1f MiB", size / 1048576, plain.seconds, enc.seconds,
    100 * (enc.seconds - plain.seconds) / plain.seconds, plain.rss_kb / 1024, enc.rss_kb / 1024))
end)
stop()
if not ok then error(err, 0) end
