-- covers: scripts/nightly.lua scripts/prune.lua scripts/lib/nightly.lua
-- Every flag of nightly and prune that no other test shows takes effect:
-- the keep rules and --grace reach the prune step, --drill-db and
-- --drill-every the drill, --compress/--level/--pg-bin the backup,
-- --sign-password-file the signing key, --no-readback the read-back, the
-- S3 flags every request (--endpoint-url over --ca-bundle's TLS, --region,
-- --retries, --timeout, --profile, --part-size, --parallel), --lock-ttl the
-- lock's expiry, --config the file; prune's --json, --wait, --lock-ttl.
-- A misconfigured run fails before the lock and the start ping (exit 2).
local t = require "harness.testing"
local h = require "harness.env"
local children = require "harness.children"
local s3h = require "harness.s3"
local s3proxy = require "harness.s3proxy"
local cjson = require "cjson"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local s3 = require "pgvault.s3"
local naming = require "lib.naming"
local retention = require "lib.retention"

local DB = "nightly_flags_test"
local src = h.createdb(DB)
-- About 12 MB uncompressed: three parts of 5 MiB.
h.psql(src, "CREATE TABLE items AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS note "
  .. "FROM generate_series(1, 150000) g;")

local D = h.tmpdir()
local TLS = s3h.tls(D)

local NO_AWS = { AWS_ACCESS_KEY_ID = false, AWS_SECRET_ACCESS_KEY = false, AWS_SESSION_TOKEN = false,
  AWS_ENDPOINT_URL = false, AWS_ENDPOINT_URL_S3 = false, AWS_REGION = false, AWS_DEFAULT_REGION = false,
  AWS_PROFILE = false, AWS_CA_BUNDLE = false, AWS_CONFIG_FILE = D .. "/no-config",
  AWS_SHARED_CREDENTIALS_FILE = D .. "/no-credentials" }

local function env_with(extra)
  local e = {}
  for k, v in pairs(NO_AWS) do e[k] = v end
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

local KEYS_ONLY = env_with({ AWS_ACCESS_KEY_ID = h.s3().access_key, AWS_SECRET_ACCESS_KEY = h.s3().secret_key })

local function run(args, env, cwd)
  return h.pgvault(args, { env = env or h.s3().env, cwd = cwd, timeout = 600 })
end

local function step(r, name)
  for _, s in ipairs(cjson.decode(r.stdout).steps) do if s.name == name then return s end end
end

local function listing(dir)
  local out = fs.listdir(dir)
  table.sort(out)
  return out
end

t.test("the keep rules and --grace reach the prune step; --drill-db, --drill-every, --compress, --level the run",
  function()
  local dir = h.tmpdir() .. "/b"
  fs.mkdir_p(dir)
  -- an archive without a manifest, two hours old
  local orphan = naming.archive_name(naming.stamp(os.time() - 7200), "prod", ".zst")
  h.write(dir .. "/" .. orphan, "cut off")
  h.run({ "touch", "-d", "@" .. (os.time() - 7200), dir .. "/" .. orphan })
  local rules = { "--keep-last", "1", "--keep-hourly", "2", "--keep-daily", "3", "--keep-weekly", "4",
    "--keep-monthly", "5", "--keep-yearly", "6", "--keep-within", "1d", "--keep-within-hourly", "2d",
    "--keep-within-daily", "3d", "--keep-within-weekly", "4d", "--keep-within-monthly", "5d",
    "--keep-within-yearly", "6d" }
  local drill = "nightly_flags_scratch"
  local args = { "nightly", "--db", src, "--to", dir, "--suffix", "prod", "--grace", "1h", "--drill-every", "day",
    "--drill-db", h.pg().url(drill), "--compress", "pg", "--level", "2", "--json" }
  for _, a in ipairs(rules) do args[#args + 1] = a end
  local r = run(args)
  t.eq(r.code, 0, r.stderr)
  local want = retention.describe(retention.policy { keep_last = 1, keep_hourly = 2, keep_daily = 3, keep_weekly = 4,
    keep_monthly = 5, keep_yearly = 6, keep_within = "1d", keep_within_hourly = "2d", keep_within_daily = "3d",
    keep_within_weekly = "4d", keep_within_monthly = "5d", keep_within_yearly = "6d" })
  t.match(want, "yearly within 6d", "every rule is in the description")
  t.ok(r.stderr:find(want, 1, true), "the prune step applies every rule: " .. want)
  t.match(step(r, "prune").detail, "1 leftover removed", "--grace 1h: the two-hour-old orphan went")
  t.ok(not fs.exists(dir .. "/" .. orphan), "removed")
  t.match(step(r, "restore drill").detail, "^restored into " .. drill .. " and dropped", "--drill-db")
  local made = r.stdout and cjson.decode(r.stdout).backups[1].path
  t.match(made, "_prod%.backup$", "--compress pg: a plain .backup")
  t.eq(cjson.decode(h.read(made .. ".manifest.json")).compression, { method = "pg", level = 2 }, "--level 2")
  r = run({ "nightly", "--db", src, "--to", dir, "--suffix", "prod", "--drill-every", "day", "--json" })
  t.match(step(r, "restore drill").detail, "^done today", "--drill-every day: once a day")
  r = run({ "nightly", "--db", src, "--to", dir, "--suffix", "prod", "--pg-bin", D .. "/no-such-bin" })
  t.eq(r.code, 1, "--pg-bin: " .. r.stderr)
  t.match(r.stderr, "no%-such%-bin", "the backup looked in --pg-bin")
end)

t.test("a misconfigured run fails before the lock and the start ping (exit 2)", function()
  local dir = h.tmpdir() .. "/b"
  for _, c in ipairs({
    { { "--compress", "pg", "--level", "12" }, "%-%-level for pg %(gzip%) must be 1%.%.9" },
    { { "--suffix", "bad name" }, "%-%-suffix 'bad name' must be letters" },
    { { "-r", "age1notarecipient" }, "%-r/%-%-recipient" },
  }) do
    local args = { "nightly", "--db", src, "--to", dir }
    for _, a in ipairs(c[1]) do args[#args + 1] = a end
    local r = run(args)
    t.eq(r.code, 2, table.concat(c[1], " ") .. ": " .. r.stderr)
    t.match(r.stderr, c[2], "says which setting")
    t.no_match(r.stderr, "info: lock", "no step ran")
    t.eq(select(2, r.stderr:gsub("\n", "")), 1, "one line")
  end
  local r = run({ "nightly", "--to", dir })
  t.eq(r.code, 2, "no database")
  t.match(r.stderr, "no database: give %-%-db URL", "what to do")
end)

t.test("--sign-password-file opens an encrypted signing key; a wrong password fails before anything is dumped",
  function()
  local keys = h.tmpdir()
  h.write(keys .. "/pw", "the password\n")
  h.write(keys .. "/bad", "not it\n")
  t.eq(h.pgvault({ "keygen", "--sign", "--password-file", keys .. "/pw", "-o", keys .. "/k" }).code, 0, "keygen")
  local dir = h.tmpdir() .. "/b"
  local r = run({ "nightly", "--db", src, "--to", dir, "--sign", keys .. "/k", "--sign-password-file", keys .. "/pw",
    "--drill-every", "never" })
  t.eq(r.code, 0, r.stderr)
  local signed = 0
  for _, n in ipairs(listing(dir)) do if n:match("%.minisig$") then signed = signed + 1 end end
  t.eq(signed, 1, "signed")
  r = run({ "nightly", "--db", src, "--to", dir, "--sign", keys .. "/k", "--sign-password-file", keys .. "/bad",
    "--drill-every", "never" })
  t.eq(r.code, 1, "a wrong password")
  t.match(r.stderr, "failed at backup: .*password", "says so")
  t.no_match(r.stderr, "backing up database", "before pg_dump")
end)

t.test("the S3 flags reach every request of nightly and prune; --no-readback, --part-size, --parallel", function()
  local proxy <close> = s3proxy.start({ tls = TLS })
  local bucket = s3h.make_bucket("nightly-flags")
  local dest = "s3://" .. bucket .. "/prod/"
  local flags = { "--endpoint-url", proxy.endpoint, "--ca-bundle", TLS.ca, "--region", "eu-nightly-1" }
  local function nightly(extra, env)
    local args = { "nightly", "--db", src, "--to", dest, "--suffix", "prod", "--drill-every", "never", "--json" }
    for _, a in ipairs(extra) do args[#args + 1] = a end
    return run(args, env)
  end
  local args = { "--compress", "none", "--part-size", "5", "--parallel", "1", "--no-readback", "--retries", "3",
    "--timeout", "30" }
  for _, a in ipairs(flags) do args[#args + 1] = a end
  local r = nightly(args, KEYS_ONLY)
  t.eq(r.code, 0, r.stderr)
  local st = proxy:stats()
  t.eq(st.regions, { ["eu-nightly-1"] = st.requests }, "every request over --endpoint-url, signed for --region")
  t.eq(st.ops.UploadPart, 3, "12 MB in parts of --part-size 5 MiB")
  t.eq(st.max_in_flight.UploadPart, 1, "--parallel 1: one part at a time")
  t.eq(step(r, "read-back").detail, "--no-readback", "skipped")
  for what in pairs(st.objects) do t.no_match(what, "^GetObject .*%.backup$", "the archive is not read back") end
  -- --retries: a data request that keeps failing, exactly that many attempts
  proxy:reset()
  proxy:rules({ { op = "GetObject", action = "status503", retry_after = 0 } })
  args = { "--retries", "2" }
  for _, a in ipairs(flags) do args[#args + 1] = a end
  r = nightly(args, KEYS_ONLY)
  t.eq(r.code, 1, "the lock cannot be read")
  t.match(r.stderr, "GetObject s3://%S+ failed after 2 attempts", "--retries 2")
  -- --timeout: an answer that stalls longer is given up on
  proxy:reset()
  proxy:rules({ { op = "GetObject", action = "hang" } })
  args = { "--retries", "1", "--timeout", "1" }
  for _, a in ipairs(flags) do args[#args + 1] = a end
  local t0 = proc.now()
  r = nightly(args, KEYS_ONLY)
  t.eq(r.code, 1, "a stalled GetObject: " .. r.stderr)
  t.ok(proc.now() - t0 < 60, "given up after --timeout, not the default 60 s")
  proxy:rules({})
  -- --profile: keys, endpoint, region and CA from the profile alone
  h.write(D .. "/credentials", string.format("[nightly]\naws_access_key_id = %s\naws_secret_access_key = %s\n",
    h.s3().access_key, h.s3().secret_key))
  h.write(D .. "/config", string.format("[profile nightly]\nregion = eu-profile-1\nendpoint_url = %s\nca_bundle = %s\n",
    proxy.endpoint, TLS.ca))
  local profile_env = env_with({ AWS_CONFIG_FILE = D .. "/config", AWS_SHARED_CREDENTIALS_FILE = D .. "/credentials" })
  proxy:reset()
  r = nightly({ "--profile", "nightly", "--keep-last", "1" }, profile_env)
  t.eq(r.code, 0, r.stderr)
  st = proxy:stats()
  t.eq(st.regions, { ["eu-profile-1"] = st.requests }, "every request through the profile")
  t.match(step(r, "read-back").detail, "every byte read back", "read back by default")
  -- prune: the same flags, --json
  proxy:reset()
  args = { "prune", dest, "--keep-last", "1", "--json" }
  for _, a in ipairs(flags) do args[#args + 1] = a end
  r = run(args, KEYS_ONLY)
  t.eq(r.code, 0, r.stderr)
  st = proxy:stats()
  t.eq(st.regions, { ["eu-nightly-1"] = st.requests }, "prune: every request over the flags")
  local out = cjson.decode(r.stdout)
  t.eq({ out.kept, out.destination }, { 1, dest }, "--json: what was done")
end)

t.test("--lock-ttl sets the bucket lock's expiry; prune --wait waits for a running nightly", function()
  local bucket = s3h.make_bucket("nightly-ttl")
  local dest = "s3://" .. bucket .. "/prod/"
  local release = children.lock_table(DB, "items")
  local handle, output = children.pgvault({ "nightly", "--db", src, "--to", dest, "--drill-every", "never",
    "--lock-ttl", "2h", "--no-readback" }, h.s3().env)
  t.ok(children.find(handle:pid(), "pg_dump", nil, 30), "pg_dump started")
  local lock = cjson.decode(s3.get(dest .. ".pgvault-local.lock", s3h.direct()))
  t.ok(math.abs(lock.expires - lock.started - 7200) <= 5, "expires two hours after it started")
  local r = run({ "prune", dest, "--keep-last", "1" })
  t.eq(r.code, 1, "prune refused while the nightly runs")
  local waiting, wait_output = children.pgvault({ "prune", dest, "--keep-last", "1", "--wait", "--json" },
    h.s3().env)
  proc.sleep(1)
  t.eq(waiting:wait(0), nil, "prune --wait waits")
  release()
  t.eq(handle:wait(120), 0, "the nightly finished: " .. select(2, output()))
  handle:close()
  t.eq(waiting:wait(120), 0, "then prune ran: " .. select(2, wait_output()))
  waiting:close()
  t.eq(cjson.decode((wait_output())).kept, 1, "kept the backup")
end)

t.test("--config FILE names the configuration file", function()
  local d = h.tmpdir()
  local dir = d .. "/b"
  h.write(d .. "/elsewhere.lua", string.format("environment \"prod\" { db = %q, to = %q, drill_every = \"never\" }\n",
    src, dir))
  local r = run({ "nightly", "--config", d .. "/elsewhere.lua", "--env", "prod" })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "^nightly prod: ok", "the file's environment")
  r = run({ "prune", "--config", d .. "/elsewhere.lua", "--env", "prod", "--dry-run", "--json" })
  t.eq(r.code, 0, r.stderr)
  t.eq(cjson.decode(r.stdout)[1].action, "keep", "prune found the destination in the file")
end)
