-- covers: scripts/nightly.lua scripts/lib/nightly.lua scripts/lib/notify.lua
-- pgvault nightly: the whole procedure on a directory and on a bucket
-- (lock, pings, backup, read-back check, prune, restore drill on its
-- schedule, summary), notifications received by a local HTTP server
-- (healthchecks.io convention, webhook with its HMAC), the configuration
-- file, and what must hold when a step fails or the run is interrupted:
-- the fail ping with the log tail, the lock released, nothing partial.
local t = require "harness.testing"
local h = require "harness.env"
local children = require "harness.children"
local httpserver = require "harness.httpserver"
local cjson = require "cjson"
local fs = require "pgvault.fs"
local http = require "pgvault.http"
local proc = require "pgvault.proc"
local s3 = require "pgvault.s3"

local DB = "nightly_source_test"
local src = h.createdb(DB)
h.psql(src, [[
CREATE TABLE items (id int PRIMARY KEY, name text);
INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g;
CREATE TABLE notes (id serial, body text);
INSERT INTO notes (body) SELECT repeat('n', 100) FROM generate_series(1, 50);
]])

local HOOKS = httpserver.start()

local function direct()
  local c = h.s3()
  return { endpoint_url = c.endpoint, region = c.region, access_key_id = c.access_key,
    secret_access_key = c.secret_key }
end

local function make_bucket(name)
  s3.create_bucket("s3://" .. name, direct())
  return "s3://" .. name .. "/"
end

local function nightly(args, opts)
  opts = opts or {}
  local env = {}
  for k, v in pairs(h.s3().env) do env[k] = v end
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local argv = { "nightly" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return h.pgvault(argv, { env = env, cwd = opts.cwd, timeout = 600 })
end

local function names(dir)
  local out = {}
  for _, n in ipairs(fs.listdir(dir)) do out[#out + 1] = n end
  table.sort(out)
  return out
end

local function backups_in(dir)
  local out = {}
  for _, n in ipairs(names(dir)) do if n:match("%.backup") and not n:match("manifest") then out[#out + 1] = n end end
  return out
end

local function requests(path_prefix)
  local out = {}
  for _, r in ipairs(HOOKS:requests()) do
    if r.path:sub(1, #path_prefix) == path_prefix then out[#out + 1] = r end
  end
  return out
end

-- The directory's lock is free (the flock went with the run that held it).
local function released(dir, env)
  local ok, held = pcall(require("lib.lock").acquire, { to = dir, env = env })
  if ok then held:release() end
  return ok
end

t.test("directory: backup, prune, a weekly drill on the first run only; summary line; exit 0", function()
  local dir = h.tmpdir() .. "/b"
  local r = nightly({ "--db", src, "--to", dir, "--suffix", "prod", "--keep-last", "2" })
  t.eq(r.code, 0, "first run: " .. r.stderr)
  t.match(r.stdout, "^nightly prod: ok in [%d.]+s: backup %d+_prod%.backup%.zst %([%d.]+ %a+%); read%-back skipped "
    .. "%(the destination is a directory, not off%-site%); prune 1 kept, 0 removed; restore drill restored into "
    .. "pgvault_drill_nightly_source_test and dropped: row counts of %d+ tables match\n$", "summary")
  t.match(r.stderr, "info: lock %.%.%.", "steps are logged")
  t.ok(fs.exists(dir .. "/.pgvault-prod.state.json"), "the drill is recorded in the destination")
  t.ok(released(dir, "prod"), "lock released")
  local drop = h.psql(h.pg().admin_url(), "SELECT count(*) FROM pg_database WHERE datname = "
    .. "'pgvault_drill_nightly_source_test';")
  t.eq(drop, "0\n", "the scratch database is dropped")
  for i = 2, 3 do
    proc.sleep(1.05)
    r = nightly({ "--db", src, "--to", dir, "--suffix", "prod", "--keep-last", "2" })
    t.eq(r.code, 0, "run " .. i .. ": " .. r.stderr)
    t.match(r.stdout, "restore drill skipped %(done this week, %d+%-%d+%-%d+%)", "weekly: not again this week")
  end
  t.eq(#backups_in(dir), 2, "two kept")
end)

t.test("bucket: read-back check, pings start/success paired by run id, signed webhook, --json", function()
  HOOKS:reset()
  HOOKS:routes({ { path = "/ping/*", responses = { { status = 200, body = "OK" } } },
    { path = "/hook", responses = { { status = 204 } } } })
  local dest = make_bucket("nightly-ok") .. "prod/"
  local r = nightly({ "--db", src, "--to", dest, "--suffix", "prod", "--keep-daily", "7", "--drill-every", "never",
    "--ping", HOOKS:url("/ping/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"), "--webhook", HOOKS:url("/hook"),
    "--webhook-secret", "hook-secret-123", "--json" })
  t.eq(r.code, 0, r.stderr)
  local summary = cjson.decode(r.stdout)
  t.eq(summary.ok, true, "ok")
  t.eq(summary.environment, "prod")
  local steps = {}
  for _, s in ipairs(summary.steps) do steps[s.name] = s end
  t.eq(steps["read-back"].status, "ok", "read back")
  t.match(steps["read-back"].detail, "every byte read back and checked %(1050 rows%)", "counted")
  t.eq(steps["restore drill"].detail, "--drill-every never", "no drill")
  local pings = requests("/ping/")
  t.eq(#pings, 2, "start and success")
  t.match(pings[1].url, "^/ping/0b1c2d3e%-4f50%-6172%-8394%-a5b6c7d8e9f0/start%?rid=%x+%-%x+%-4%x+%-%x+%-%x+$", "start")
  local rid = pings[1].url:match("rid=(.*)$")
  t.eq(pings[2].url, "/ping/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0?rid=" .. rid, "success, same run id")
  t.match(pings[2].body, "^nightly prod: ok in ", "the summary line as body")
  local hook = requests("/hook")[1]
  t.eq(hook.method, "POST", "webhook")
  t.eq(hook.headers["x-pgvault-signature-256"], "sha256=" .. http.hmac_sha256("hook-secret-123", hook.body),
    "HMAC of the body")
  local payload = cjson.decode(hook.body)
  t.eq(payload.ok, true, "the summary")
  t.eq(payload.environment, "prod")
  t.no_match(r.stderr, "0b1c2d3e", "the ping URL's secret path is never logged")
  t.no_match(r.stderr, "hook%-secret", "the webhook secret is never logged")
end)

t.test("a failed backup: fail ping with the log tail, later steps skipped, lock released, exit 1", function()
  HOOKS:reset()
  HOOKS:routes({ { path = "/ping/*", responses = { { status = 200 } } } })
  local dir = h.tmpdir() .. "/b"
  local bad = src:gsub("/" .. DB .. "$", "/no_such_database_xyz")
  local r = nightly({ "--db", bad, "--to", dir, "--ping", HOOKS:url("/ping/abcdefgh-1234") })
  t.eq(r.code, 1, "exit code")
  t.match(r.stdout, "^nightly local: FAILED in [%d.]+s: backup FAILED; read%-back skipped %([^)]*%); prune skipped "
    .. "%(the backup did not succeed%); restore drill skipped %(the backup did not succeed%) %(backup: ", "summary")
  t.match(r.stderr, "pgvault: nightly: nightly local failed at backup: .*no_such_database_xyz", "one line saying what")
  local pings = requests("/ping/")
  t.eq(#pings, 2, "start and fail")
  t.match(pings[2].url, "^/ping/abcdefgh%-1234/fail%?rid=", "fail")
  t.match(pings[2].body, "backup: FAILED: ", "the log tail is the body")
  t.no_match(pings[2].body, h.pg().password, "no password in the tail")
  t.ok(released(dir, "local"), "lock released")
  t.eq(#backups_in(dir), 0, "nothing partial")
end)

t.test("a ping URL that does not answer never fails the backup; it is logged", function()
  local dir = h.tmpdir() .. "/b"
  local tmp = httpserver.start()
  local dead = tmp:url("/ping/x")
  tmp:close()
  local r = nightly({ "--db", src, "--to", dir, "--drill-every", "never", "--ping", dead })
  t.eq(r.code, 0, "exit code: " .. r.stderr)
  t.match(r.stderr, "warning: ping start could not be delivered: POST http://127%.0%.0%.1:%d+/%*%*%*/start%?rid=[%x-]+ "
    .. "failed after 3 attempts: Couldn't connect to server: check the address and that the service is reachable "
    .. "%(the run itself is not affected%)", "logged")
  t.match(r.stderr, "warning: ping success could not be delivered", "both")
  t.eq(#backups_in(dir), 1, "the backup is there")
end)

t.test("a second run is refused naming the holder (and pings nothing); --wait waits", function()
  HOOKS:reset()
  HOOKS:routes({ { path = "/ping/*", responses = { { status = 200 } } } })
  local dir = h.tmpdir() .. "/b"
  fs.mkdir_p(dir)
  local lock = require "lib.lock"
  local held = lock.acquire { to = dir, env = "prod", command = "nightly" }
  local r = nightly({ "--db", src, "--to", dir, "--suffix", "prod", "--env-name-unused" })
  t.eq(r.code, 2, "unknown option is a usage error")
  r = nightly({ "--db", src, "--to", dir, "--suffix", "prod", "--ping", HOOKS:url("/ping/p") })
  t.eq(r.code, 1, "refused")
  t.match(r.stderr, "environment prod is locked by another run: host [^,]+, pid " .. proc.getpid(), "names the holder")
  t.eq(#requests("/ping/"), 0, "the running one reports, not this one")
  held:release()
end)

t.test("Ctrl-C during the backup: exit 130, lock released, no partial backup, fail ping", function()
  HOOKS:reset()
  HOOKS:routes({ { path = "/ping/*", responses = { { status = 200 } } } })
  local dir = h.tmpdir() .. "/b"
  local release = children.lock_table(DB, "items")
  local env = h.s3().env
  local handle, output = children.pgvault({ "nightly", "--db", src, "--to", dir, "--ping", HOOKS:url("/ping/c") },
    env)
  local dump = children.find(handle:pid(), "pg_dump", nil, 30)
  t.ok(dump, "pg_dump started")
  handle:kill("INT")
  local code = handle:wait(60)
  handle:close()
  release()
  local out, err = output()
  t.eq(code, 130, "exit code: " .. err)
  t.match(out, "^nightly local: interrupted in", "summary says so: " .. err)
  t.eq(#backups_in(dir), 0, "no backup")
  for _, n in ipairs(names(dir)) do t.no_match(n, "partial", "no temporary file left: " .. n) end
  t.ok(released(dir, "local"), "lock released")
  local pings = requests("/ping/")
  t.eq(#pings, 2, "start and fail")
  t.match(pings[2].url, "/fail%?rid=", "fail ping on Ctrl-C")
end)

t.test("--env from the configuration file; a typo in it fails before anything runs", function()
  local d = h.tmpdir()
  local bucket = make_bucket("nightly-conf")
  h.write(d .. "/pgvault.conf.lua", string.format([[
defaults { keep_last = 3, drill_every = "never" }
environment "prod" {
  db = env "NIGHTLY_TEST_DB",
  to = %q,
}
]], bucket .. "prod/"))
  local r = nightly({ "--env", "prod" }, { cwd = d, env = { NIGHTLY_TEST_DB = src } })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "^nightly prod: ok .*read%-back every byte read back", "from the file")
  local objs = s3.list(bucket .. "prod/", direct())
  local n = 0
  for _, o in ipairs(objs) do if o.key:match("_prod%.backup%.zst$") then n = n + 1 end end
  t.eq(n, 1, "one backup in the environment's bucket")
  h.write(d .. "/pgvault.conf.lua", [[
environment "prod" {
  db = "x",
  keep_dayly = 7,
}
]])
  r = nightly({ "--env", "prod" }, { cwd = d })
  t.eq(r.code, 1, "refused")
  t.match(r.stderr, "pgvault%.conf%.lua:3: unknown key 'keep_dayly' in environment prod %(did you mean keep_daily%?%)",
    "names file and line")
end)

-- Bad input: each a one-line error naming what failed, exit 1, the lock
-- released, nothing partial, a fail ping.
local function bad_run(args, env)
  HOOKS:reset()
  HOOKS:routes({ { path = "/ping/*", responses = { { status = 200 } } } })
  local all = { "--db", src, "--ping", HOOKS:url("/ping/bad"), "--drill-every", "never" }
  for _, a in ipairs(args) do all[#all + 1] = a end
  local r = nightly(all, { env = env })
  t.eq(r.code, 1, "exit code: " .. r.stderr)
  local last = r.stderr:match("([^\n]*)\n?$")
  t.match(last, "^pgvault: nightly: nightly %S+ failed at ", "one line saying where")
  local pings = requests("/ping/")
  t.match(pings[#pings] and pings[#pings].url or "", "/fail%?rid=", "a fail ping")
  return r, last
end

local function no_leftovers(bucket_prefix)
  local objs = s3.list(bucket_prefix, direct())
  for _, o in ipairs(objs) do t.no_match(o.key, "%.backup", "nothing partial in the bucket: " .. o.key) end
  t.no_match(#objs > 0 and objs[#objs].key or "", "%.lock$", "no lock left")
  local o = direct()
  o.max_attempts = 1
  local c = s3.client(o)
  local ok, ups = pcall(c.uploads, c, bucket_prefix)
  if ok then t.eq(#ups, 0, "no multipart upload left") end
end

t.test("bad input: an unreachable bucket", function()
  local _, last = bad_run({ "--to", "s3://nowhere/prod/", "--retries", "2" },
    { AWS_ENDPOINT_URL = "http://127.0.0.1:9" })
  t.match(last, "failed at lock: .*nowhere/prod/%.pgvault%-local%.lock.*Couldn't connect to server", "what failed")
  t.match(last, "check ", "what to do")
end)

t.test("bad input: a wrong secret key", function()
  local dest = make_bucket("nightly-wrongkey") .. "prod/"
  local _, last = bad_run({ "--to", dest }, { AWS_SECRET_ACCESS_KEY = "wrong" .. h.s3().secret_key:sub(6) })
  t.match(last, "SignatureDoesNotMatch", "says which refusal")
  t.match(last, "the secret access key does not match the key id", "what to do")
  t.no_match(last, h.s3().secret_key:sub(6), "no key in the message")
  no_leftovers(dest)
end)

t.test("bad input: a full local disk", function()
  local dir = h.mount_tmpfs("160k")
  local big = h.createdb("nightly_big_test")
  h.psql(big, "CREATE TABLE r AS SELECT md5(random()::text) || md5(random()::text) AS v "
    .. "FROM generate_series(1, 30000);")
  local r, last = bad_run({ "--db", big, "--to", dir })
  t.match(last, "failed at backup: .*No space left on device", "what failed")
  local left = names(dir)
  t.eq(left, { ".pgvault-local.lock" }, "nothing partial: " .. table.concat(left, " "))
  t.ok(released(dir, "local"), "lock released")
  t.match(r.stdout, "backup FAILED", "summary")
end)

t.test("bad input: the database goes away in the middle of the dump", function()
  local dir = h.tmpdir() .. "/b"
  local gone = h.createdb("nightly_gone_test")
  h.psql(gone, "CREATE TABLE a (x int); INSERT INTO a SELECT generate_series(1, 1000);")
  local release = children.lock_table("nightly_gone_test", "a")
  HOOKS:reset()
  HOOKS:routes({ { path = "/ping/*", responses = { { status = 200 } } } })
  local handle, output = children.pgvault({ "nightly", "--db", gone, "--to", dir, "--drill-every", "never",
    "--ping", HOOKS:url("/ping/gone") }, h.s3().env)
  t.ok(children.find(handle:pid(), "pg_dump", nil, 30), "pg_dump started")
  -- Once pg_dump's session waits on the lock, end it from the server's side.
  local deadline, ended = proc.now() + 30, "0\n"
  while ended == "0\n" and proc.now() < deadline do
    ended = h.psql(h.pg().admin_url(), "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
      .. "datname = 'nightly_gone_test' AND application_name = 'pg_dump' AND wait_event_type = 'Lock';")
    if ended == "0\n" then proc.sleep(0.1) end
  end
  t.neq(ended, "0\n", "pg_dump's session was ended")
  local code = handle:wait(60)
  handle:close()
  release()
  local _, err = output()
  t.eq(code, 1, "exit code: " .. err)
  t.match(err:match("([^\n]*)\n?$"), "^pgvault: nightly: nightly local failed at backup: .*pg_dump", "what failed")
  t.eq(#backups_in(dir), 0, "nothing partial")
  for _, n in ipairs(names(dir)) do t.no_match(n, "partial", "no temporary file") end
  t.ok(released(dir, "local"), "lock released")
  local pings = requests("/ping/")
  t.match(pings[#pings].url, "/fail%?rid=", "fail ping")
end)
