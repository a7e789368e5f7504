-- covers: scripts/backup.lua scripts/restore.lua scripts/verify.lua scripts/list.lua
-- Every documented option of backup, restore, verify and list takes effect
-- (issue 12's audit), in particular the S3 options given only as flags: no
-- AWS_* setting in the environment but the keys (the suite's other tests
-- export AWS_ENDPOINT_URL, which hid options that were parsed and then
-- ignored), over HTTPS with the test CA (--ca-bundle), --profile from a
-- credentials file, --retries and --part-size seen at the proxy; and the
-- options of backup that no other test shows (--level for zstd, --pg-bin).
local t = require "harness.testing"
local h = require "harness.env"
local httpserver = require "harness.httpserver"
local s3proxy = require "harness.s3proxy"
local cjson = require "cjson"
local fs = require "pgvault.fs"
local s3 = require "pgvault.s3"

local PG = h.pg()
local S3 = h.s3()
local SRC = "options_source_test"
local url = h.createdb(SRC)
h.psql(url, "CREATE TABLE t AS SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS h "
  .. "FROM generate_series(1, 80000) g;")

local tls = httpserver.make_tls(h.tmpdir())
local proxy = s3proxy.start({ tls = tls })
local BUCKET = "options-flags"
s3.create_bucket("s3://" .. BUCKET, proxy:opts())

-- Only the keys in the environment: everything else is a flag.
local KEYS = { AWS_ACCESS_KEY_ID = S3.access_key, AWS_SECRET_ACCESS_KEY = S3.secret_key, AWS_ENDPOINT_URL = false,
  AWS_REGION = false, AWS_DEFAULT_REGION = false, AWS_PROFILE = false, AWS_CA_BUNDLE = false,
  AWS_CONFIG_FILE = "/nonexistent/aws-config", AWS_SHARED_CREDENTIALS_FILE = "/nonexistent/aws-credentials",
  AWS_EC2_METADATA_DISABLED = "true" }
local FLAGS = { "--endpoint-url", proxy.endpoint, "--region", S3.region, "--ca-bundle", tls.ca }

local function run(args, env)
  local argv = {}
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  for _, a in ipairs(FLAGS) do argv[#argv + 1] = a end
  return h.pgvault(argv, { env = env or KEYS, timeout = 300 })
end

local function last_line(s) return s:match("([^\n]*)\n?$") end

t.test("S3 options as flags only: backup, list", function()
  local r = run({ "backup", "--db", url, "--to", "s3://" .. BUCKET .. "/flags/" })
  t.eq(r.code, 0, r.stderr)
  local key = last_line(r.stdout)
  r = run({ "list", "--from", "s3://" .. BUCKET .. "/flags/", "--json" })
  t.eq(r.code, 0, r.stderr)
  t.eq(cjson.decode(r.stdout)[1].path, key)
end)

t.test("--ca-bundle takes effect: without it the test CA is unknown", function()
  local argv = { "list", "--from", "s3://" .. BUCKET .. "/flags/", "--endpoint-url", proxy.endpoint,
    "--region", S3.region }
  local r = h.pgvault(argv, { env = KEYS })
  t.eq(r.code, 1)
  t.match(r.stderr, "cannot connect securely")
end)

t.test("--profile reads the keys from a credentials file", function()
  local d = h.tmpdir()
  h.write(d .. "/credentials", string.format("[pgv-test]\naws_access_key_id = %s\naws_secret_access_key = %s\n",
    S3.access_key, S3.secret_key))
  local env = {}
  for k, v in pairs(KEYS) do env[k] = v end
  env.AWS_ACCESS_KEY_ID, env.AWS_SECRET_ACCESS_KEY = false, false
  env.AWS_SHARED_CREDENTIALS_FILE = d .. "/credentials"
  local r = run({ "list", "--from", "s3://" .. BUCKET .. "/flags/", "--profile", "pgv-test" }, env)
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "options_source_test")
  r = run({ "list", "--from", "s3://" .. BUCKET .. "/flags/", "--profile", "no-such-profile" }, env)
  t.eq(r.code, 1, "another profile has no keys")
end)

t.test("--retries: one attempt fails where the default retries", function()
  proxy:rules({ { op = "ListObjectsV2", action = "status503", count = 1 } })
  local r = run({ "list", "--from", "s3://" .. BUCKET .. "/flags/", "--retries", "1" })
  t.eq(r.code, 1, "one attempt, one 503")
  proxy:rules({ { op = "ListObjectsV2", action = "status503", count = 1 } })
  r = run({ "list", "--from", "s3://" .. BUCKET .. "/flags/" })
  t.eq(r.code, 0, r.stderr)
  proxy:rules({})
end)

t.test("--part-size: the upload's parts are that size", function()
  proxy:reset()
  local r = run({ "backup", "--db", url, "--to", "s3://" .. BUCKET .. "/parts/", "--compress", "none",
    "--part-size", "5" })
  t.eq(r.code, 0, r.stderr)
  local size = s3.head(last_line(r.stdout), proxy:opts()).size
  t.ok(size > 5 * 1024 * 1024, "an archive over one part: " .. size)
  local parts = proxy:stats().ops.UploadPart
  t.eq(parts, (size + 5 * 1024 * 1024 - 1) // (5 * 1024 * 1024), "parts of 5 MiB")
end)

t.test("backup --level for zstd, --pg-bin", function()
  local d = h.tmpdir()
  local sizes = {}
  local small = h.createdb("options_level_test")
  h.psql(small, "CREATE TABLE words AS SELECT g, (ARRAY['alpha','beta','gamma','delta'])[1 + g % 4] || ' ' || "
    .. "(g % 977) || repeat(' lorem ipsum', g % 7) AS w FROM generate_series(1, 30000) g;")
  for _, level in ipairs({ "1", "19" }) do
    local r = h.pgvault({ "-q", "backup", "--db", small, "--to", d, "--level", level })
    t.eq(r.code, 0, r.stderr)
    local path = last_line(r.stdout)
    t.eq(cjson.decode(h.read(path .. ".manifest.json")).compression.level, tonumber(level))
    sizes[level] = fs.stat(path).size
  end
  t.ok(sizes["19"] < sizes["1"], "level 19 is smaller than level 1")
  h.dropdb("options_level_test")
  local r = h.pgvault({ "-q", "backup", "--db", url, "--to", d, "--pg-bin", PG.bindir })
  t.eq(r.code, 0, r.stderr)
  r = h.pgvault({ "-q", "backup", "--db", url, "--to", d, "--pg-bin", d })
  t.eq(r.code, 1)
  t.match(r.stderr, d:gsub("%p", "%%%0"))
  h.dropdb(SRC)
  proxy:close()
end)

t.test("usage errors: exit 2, one line naming the option, never Lua internals", function()
  local d = h.tmpdir()
  h.run({ "age-keygen", "-o", d .. "/k" })
  local classic = h.run({ "age-keygen", "-y", d .. "/k" }).stdout:match("%S+")
  h.pgvault({ "keygen", "--pq", "-o", d .. "/pq" })
  local pq = h.pgvault({ "keygen", "-y", d .. "/pq" }).stdout:match("%S+")
  local db = PG.url("options_nowhere")
  local cases = {
    -- was "bad argument #1 to 'writer'"
    { { "backup", "--db", db, "-r", pq, "-r", classic }, "%-r/%-R: post%-quantum" },
    { { "backup", "--db", db, "-r", "age1bogus" }, "%-r/%-%-recipient: malformed age recipient" },
    { { "backup", "--db", db, "--level", "x" }, "%-%-level must be " },
    { { "backup", "--db", db, "--compress", "lz9" }, "%-%-compress must be zstd, pg or none" },
    { { "backup", "--db", db, "--suffix", "a b" }, "%-%-suffix 'a b' must be" },
    { { "backup", "--db", db, "--to", "s3://" }, "%-%-to: 's3://' has no valid bucket name" },
    { { "backup", "--db", db, "--retries", "0" }, "%-%-retries must be " },
    { { "backup", "--db", db, "--part-size", "4" }, "%-%-part%-size must be " },
    { { "backup" }, "missing %-%-db URL" },
    { { "restore", "x", "--db", db, "--jobs", "0" }, "%-%-jobs must be 1%.%.64" },
    { { "restore", "x", "--db", db, "--in-place" }, "add %-%-yes to confirm" },
    { { "restore", "x", "--db", db, "--retries", "-1" }, "%-%-retries must be " },
    { { "restore", "x" }, "missing %-%-db URL" },
    { { "verify", "x", "--threads", "0" }, "%-%-threads needs a whole number 1%.%.64" },
    { { "verify", "x", "--retries", "x" }, "%-%-retries must be " },
    { { "list", "--retries", "0" }, "%-%-retries must be " },
    { { "list", "--frm", "x" }, "unknown option %-%-frm" },
    { { "scripts", "--copy", "lib/backup", d .. "/k" }, "is not a directory" },
  }
  for _, c in ipairs(cases) do
    local r = h.pgvault(c[1])
    local what = table.concat(c[1], " ")
    t.eq(r.code, 2, what .. ": " .. r.stderr)
    t.match(r.stderr, c[2], what)
    t.eq(select(2, r.stderr:gsub("\n", "")), 1, what .. ": one line")
    t.no_match(r.stderr, "%.lua:%d+:", what .. ": no Lua internals")
    t.no_match(r.stderr, "bad argument", what)
  end
end)
