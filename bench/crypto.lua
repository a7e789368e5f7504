-- pgvault encrypt / decrypt against age / age -d on the same input (1 GiB
-- by default; PGVAULT_BENCH_MB to change), output to /dev/null, one run
-- each: wall-time ratios (pgvault / age; target <= 0.7) and peak RSS
-- (target < 16 MiB). `bin/pgvault run bench/crypto.lua`
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
