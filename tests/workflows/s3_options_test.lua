-- covers: scripts/download.lua scripts/verify.lua scripts/restore.lua bindings/s3/config.c
-- Every command that takes S3 options is shown to use them for every
-- request, the data included (issue 12: download, verify and restore sent
-- their GetObject to Amazon with default settings). Each command runs
-- (1) with the options only as flags: the environment holds the keys and
-- nothing else, the server is reached through an HTTPS proxy signed by a
-- test CA (so --endpoint-url and --ca-bundle must reach every request), the
-- proxy sees every request signed for --region, and a data request that
-- keeps failing gives up after exactly --retries attempts; (2) with
-- --profile alone, from a credentials file and a config file. Also: bad
-- values are usage errors naming the option, --part-size and --parallel
-- take effect, -q silences the success lines of upload and download, and a
-- plain http:// endpoint draws one warning.
local t = require "harness.testing"
local h = require "harness.env"
local s3h = require "harness.s3"
local s3proxy = require "harness.s3proxy"

local MiB = 1024 * 1024
local D = h.tmpdir()
local TLS = s3h.tls(D)
local PROXY = s3proxy.start({ tls = TLS })
local BUCKET = s3h.make_bucket("s3-options")
local FILE = s3h.make_file(D .. "/data.bin", 12 * MiB)
local UP = "s3://" .. BUCKET .. "/up/data.bin"
local SRC = h.createdb("s3_options_src_test")
h.psql(SRC, "CREATE TABLE t (id int PRIMARY KEY, note text); "
  .. "INSERT INTO t SELECT g, 'note ' || g FROM generate_series(1, 200) g;")

local NO_AWS = { AWS_ACCESS_KEY_ID = false, AWS_SECRET_ACCESS_KEY = false, AWS_SESSION_TOKEN = false,
  AWS_ENDPOINT_URL = false, AWS_ENDPOINT_URL_S3 = false, AWS_REGION = false, AWS_DEFAULT_REGION = false,
  AWS_PROFILE = false, AWS_CA_BUNDLE = false, AWS_CONFIG_FILE = D .. "/no-config",
  AWS_SHARED_CREDENTIALS_FILE = D .. "/no-credentials" }

local function env_with(extra)
  local e = {}
  for k, v in pairs(NO_AWS) do e[k] = v end
  for k, v in pairs(extra) do e[k] = v end
  return e
end

-- The keys and nothing else.
local KEYS_ONLY = env_with({ AWS_ACCESS_KEY_ID = h.s3().access_key, AWS_SECRET_ACCESS_KEY = h.s3().secret_key })
local FLAGS = { "--endpoint-url", PROXY.endpoint, "--ca-bundle", TLS.ca, "--region", "eu-flags-1" }

-- A profile that holds everything, in files of its own.
h.write(D .. "/credentials", string.format("[default]\naws_access_key_id = WRONG\naws_secret_access_key = x\n\n"
  .. "[pgv]\naws_access_key_id = %s\naws_secret_access_key = %s\n", h.s3().access_key, h.s3().secret_key))
h.write(D .. "/config", string.format("[profile pgv]\nregion = eu-profile-1\nendpoint_url = %s\nca_bundle = %s\n",
  PROXY.endpoint, TLS.ca))
local PROFILE_ENV = env_with({ AWS_CONFIG_FILE = D .. "/config", AWS_SHARED_CREDENTIALS_FILE = D .. "/credentials" })

local function join(...)
  local out = {}
  for _, list in ipairs({ ... }) do
    for _, a in ipairs(list) do out[#out + 1] = a end
  end
  return out
end

local function pgvault(args, env)
  return h.pgvault(args, { env = env, timeout = 300 })
end

-- Runs a command three ways; `data` is the operation that carries its data.
local function check_command(name, args, data, more)
  -- a data request that keeps failing: exactly --retries attempts
  PROXY:reset()
  PROXY:rules({ { op = data, action = "status503", retry_after = 0 } })
  local r = pgvault(join(args(1), FLAGS, { "--retries", "2" }), KEYS_ONLY)
  t.eq(r.code, 1, name .. " with a failing " .. data .. ": " .. r.stderr .. r.stdout)
  local failed = r.stderr:match(data .. " s3://(%S+) failed after 2 attempts")
  t.ok(failed, name .. ": --retries: " .. r.stderr)
  -- (several requests of one kind may be under way at once: a listing
  -- reads manifests in parallel; each gets --retries attempts)
  local objects = PROXY:stats().objects
  local what = data .. " /" .. tostring(failed):gsub("/+$", "")
  t.eq(objects[what], 2, name .. ": two attempts of " .. what)
  for other, n in pairs(objects) do
    if other:sub(1, #data + 1) == data .. " " then t.ok(n <= 2, name .. ": at most two attempts of " .. other) end
  end
  -- flags only
  PROXY:reset()
  r = pgvault(join(args(2), FLAGS, { "--retries", "3" }), KEYS_ONLY)
  t.eq(r.code, 0, name .. " with flags only: " .. r.stderr)
  local st = PROXY:stats()
  t.ok((st.ops[data] or 0) >= 1, name .. ": " .. data .. " went through --endpoint-url (over --ca-bundle's TLS)")
  t.eq(st.regions, { ["eu-flags-1"] = st.requests }, name .. ": every request signed for --region")
  if more then more(r, st, 2) end
  -- --profile alone
  PROXY:reset()
  r = pgvault(join(args(3), { "--profile", "pgv" }), PROFILE_ENV)
  t.eq(r.code, 0, name .. " with --profile: " .. r.stderr)
  st = PROXY:stats()
  t.ok((st.ops[data] or 0) >= 1, name .. ": " .. data .. " went to the profile's endpoint")
  t.eq(st.regions, { ["eu-profile-1"] = st.requests }, name .. ": every request signed for the profile's region")
  if more then more(r, st, 3) end
end

t.test("upload: flags only, --profile; --part-size and --parallel take effect", function()
  check_command("upload", function(i) return { "upload", FILE, UP .. "." .. i, "--part-size", "5", "--parallel",
    i == 3 and "3" or "1" } end, "UploadPart", function(_, st, i)
    t.eq(st.ops.UploadPart, 3, "12 MiB in parts of --part-size 5 MiB")
    if i == 2 then t.eq(st.max_in_flight.UploadPart, 1, "--parallel 1: one part at a time") end
  end)
  t.eq(s3h.file_sha256(FILE), s3h.file_sha256(FILE), "source intact")
end)

t.test("download: flags only, --profile", function()
  check_command("download", function(i) return { "download", UP .. ".2", "-o", D .. "/down." .. i } end,
    "GetObject", function(_, _, i) t.eq(s3h.file_sha256(D .. "/down." .. i), s3h.file_sha256(FILE)) end)
end)

t.test("backup: flags only, --profile", function()
  check_command("backup", function(i) return { "backup", "--db", SRC, "--to", "s3://" .. BUCKET .. "/bk/",
    "--suffix", "opts" .. i, "--compress", "none" } end, "PutObject", function(r, _, i)
    t.match(r.stdout, "s3://s3%-options/bk/%d+_opts" .. i .. "%.backup\n$")
  end)
  t.eq(#s3h.open_uploads(BUCKET), 0, "nothing left of the failed one")
end)

t.test("list: flags only, --profile", function()
  check_command("list", function() return { "list", "--from", "s3://" .. BUCKET .. "/bk/" } end, "ListObjectsV2",
    function(r) t.match(r.stdout, "_opts3%.backup") end)
end)

t.test("verify: flags only, --profile", function()
  check_command("verify", function() return { "verify", "s3://" .. BUCKET .. "/bk/latest" } end, "GetObject")
end)

t.test("restore: flags only, --profile", function()
  check_command("restore", function(i)
    h.dropdb("s3_options_target_" .. i)
    return { "restore", "s3://" .. BUCKET .. "/bk/latest", "--db", h.pg().url("s3_options_target_" .. i),
      "--database", "s3_options_src_test" }
  end, "GetObject", function(_, _, i)
    t.eq(h.psql(h.pg().url("s3_options_target_" .. i), "SELECT count(*) FROM t;"), "200\n")
    h.dropdb("s3_options_target_" .. i)
  end)
end)

t.test("s3 ls, cleanup, rm: flags only, --profile", function()
  check_command("s3 ls", function() return { "s3", "ls", "s3://" .. BUCKET .. "/up/" } end, "ListObjectsV2",
    function(r) t.match(r.stdout, "data%.bin%.3") end)
  check_command("s3 cleanup", function() return { "s3", "cleanup", "s3://" .. BUCKET .. "/" } end,
    "ListMultipartUploads")
  check_command("s3 rm", function(i) return { "s3", "rm", UP .. "." .. i } end, "DeleteObject")
  t.eq(s3h.keys(BUCKET, "up/"), {}, "both removed")
end)

t.test("bad option values are usage errors naming the option; ignored options are not offered", function()
  local cases = {
    { { "upload", FILE, UP, "--part-size", "4" },
      "%-%-part%-size must be an integer from 5 to 5120, not 4" },
    { { "upload", FILE, UP, "--part-size", "8.5" }, "%-%-part%-size must be an integer" },
    { { "upload", FILE, UP, "--parallel", "0" }, "%-%-parallel must be an integer from 1 to 64, not 0" },
    { { "download", UP, "--retries", "many" }, "%-%-retries must be an integer from 1 to 100, not \"many\"" },
    { { "backup", "--db", SRC, "--to", "s3://" .. BUCKET .. "/", "--retries", "101" },
      "%-%-retries must be an integer from 1 to 100, not 101" },
    { { "s3", "ls", "s3://" .. BUCKET .. "/", "--endpoint-url", "ftp://x" },
      "%-%-endpoint%-url must start with https://" },
    { { "list", "--from", "s3://" .. BUCKET .. "/", "--ca-bundle", D .. "/none.pem" },
      "%-%-ca%-bundle .*: no such file" },
    { { "download", UP, "--part-size", "8" }, "unknown option %-%-part%-size" },
    { { "s3", "ls", "s3://" .. BUCKET .. "/", "--parallel", "2" }, "unknown option %-%-parallel" },
  }
  for _, c in ipairs(cases) do
    local r = pgvault(c[1], KEYS_ONLY)
    t.eq(r.code, 2, table.concat(c[1], " ") .. ": " .. r.stderr)
    t.match(r.stderr, c[2], table.concat(c[1], " "))
    t.eq(select(2, r.stderr:gsub("\n", "")), 1, "one line: " .. r.stderr)
    t.no_match(r.stderr, "%.lua:%d+", "no Lua internals")
  end
end)

t.test("-q silences the success lines of upload and download", function()
  local env = s3h.env()
  local r = h.pgvault({ "upload", FILE, UP .. ".q" }, { env = env })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "uploaded 12%.0 MiB to ")
  r = h.pgvault({ "-q", "upload", FILE, UP .. ".q2" }, { env = env })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stderr, "", "quiet upload")
  t.match(r.stdout, "^s3://.*sha256:%x+\n$", "the result is still printed")
  r = h.pgvault({ "-q", "download", UP .. ".q", "-o", D .. "/q.out" }, { env = env })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stderr, "", "quiet download")
  r = h.pgvault({ "download", UP .. ".q", "-o", D .. "/q2.out" }, { env = env })
  t.match(r.stderr, "downloaded 12%.0 MiB from ")
end)

t.test("a plain http:// endpoint off this machine draws one warning; loopback and https none", function()
  h.write(D .. "/clients.lua", [[
    local s3 = require "pgvault.s3"
    for _, e in ipairs(arg) do s3.client { endpoint_url = e } end
  ]])
  local function run(...)
    return h.pgvault({ "run", D .. "/clients.lua", ... }, { env = KEYS_ONLY })
  end
  local r = run("http://192.0.2.10:9000", "http://192.0.2.10:9000")
  t.eq(r.code, 0, r.stderr)
  local _, n = r.stderr:gsub("plain HTTP", "")
  t.eq(n, 1, "said once: " .. r.stderr)
  t.match(r.stderr, "endpoint http://192%.0%.2%.10:9000 is plain HTTP")
  t.no_match(r.stderr, h.s3().secret_key, "never the secret")
  r = run("https://192.0.2.10", "http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9")
  t.eq(r.stderr, "", "no warning")
  r = run("http://localhost.example.com:9")
  t.match(r.stderr, "plain HTTP", "a name that merely starts with localhost")
end)
