-- covers: scripts/nightly.lua
-- The schedules in examples/ cannot rot: the GitHub Actions workflow's run:
-- steps are executed (installers replaced by recording stand-ins, the
-- nightly step for real against the suite's database and S3 server, with
-- the secrets this test defines), the systemd units pass systemd-analyze
-- verify and the service's ExecStart runs with its Environment= and
-- credentials, and the cron line runs with its lock and log file.
local t = require "harness.testing"
local h = require "harness.env"
local ghactions = require "harness.ghactions"
local httpserver = require "harness.httpserver"
local fs = require "pgvault.fs"
local s3 = require "pgvault.s3"

local DB = "examples_source_test"
local src = h.createdb(DB)
h.psql(src, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) "
  .. "FROM generate_series(1, 300) g;")

local S3 = h.s3()
local function direct()
  return { endpoint_url = S3.endpoint, region = S3.region, access_key_id = S3.access_key,
    secret_access_key = S3.secret_key }
end
s3.create_bucket("s3://my-db-backups", direct())

local HOOKS = httpserver.start()
HOOKS:routes({ { path = "/*", responses = { { status = 200, body = "OK" } } } })

local BIN_DIR = h.bin:match("^(.*)/[^/]+$")

-- An age key pair from the age CLI: identity file and recipient.
local function age_key(dir)
  local r = h.run({ "age-keygen", "-o", dir .. "/age.key" })
  assert(r.code == 0, r.stderr)
  local recipient = h.read(dir .. "/age.key"):match("# public key: (age1%w+)")
  return dir .. "/age.key", recipient
end

-- Stand-ins for the installers: each records its command line.
local function shims(dir, log)
  fs.mkdir_p(dir)
  for _, name in ipairs({ "sudo", "apt-get", "curl", "git", "make", "install", "tee" }) do
    h.write(dir .. "/" .. name, string.format("#!/bin/sh\necho \"%s $*\" >> %q\ncat >/dev/null\n"
      .. "exit 0\n", name, log))
    fs.chmod(dir .. "/" .. name, 493)
  end
  h.write(dir .. "/lsb_release", "#!/bin/sh\necho bookworm\n")
  fs.chmod(dir .. "/lsb_release", 493)
end

local function backups_in_bucket(prefix)
  local out = {}
  for _, o in ipairs(s3.list("s3://my-db-backups/" .. prefix, direct())) do
    if o.key:match("%.backup[%.%w]*$") and not o.key:match("manifest") then out[#out + 1] = o.key end
  end
  return out
end

t.test("GitHub Actions: every run: step executes; the nightly step backs up with the repository's secrets", function()
  local doc = ghactions.parse(h.read(h.root .. "/examples/github-actions/nightly-db-backup.yml"))
  t.eq(doc.on.schedule[1].cron, "17 3 * * *", "scheduled nightly")
  local job = doc.jobs.backup
  local d = h.tmpdir()
  local workspace, runner_temp = d .. "/workspace", d .. "/runner-temp"
  fs.mkdir_p(workspace)
  fs.mkdir_p(runner_temp)
  fs.write_file(workspace .. "/pgvault.conf.lua", h.read(h.root .. "/examples/github-actions/pgvault.conf.lua"))
  local identity, recipient = age_key(d)
  local ctx = {
    secrets = { PROD_DATABASE_URL = src, B2_KEY_ID = S3.access_key, B2_APPLICATION_KEY = S3.secret_key,
      BACKUP_AGE_IDENTITY = h.read(identity), HC_PING_URL = HOOKS:url("/0aa1bb2c-3d4e-5f60-7182-93a4b5c6d7e8") },
    vars = { B2_ENDPOINT = S3.endpoint, B2_REGION = S3.region, BACKUP_AGE_RECIPIENT = recipient, PG_MAJOR = "17" },
  }
  local log = d .. "/installers.log"
  shims(d .. "/shims", log)
  local ran = 0
  for _, step in ipairs(job.steps) do
    if step.run then
      local env = { PATH = d .. "/shims:" .. BIN_DIR .. ":/usr/bin:/bin", RUNNER_TEMP = runner_temp,
        GITHUB_WORKSPACE = workspace, HOME = d, AWS_PROFILE = false, AWS_CONFIG_FILE = "/nonexistent",
        AWS_SHARED_CREDENTIALS_FILE = "/nonexistent", AWS_ACCESS_KEY_ID = false, AWS_SECRET_ACCESS_KEY = false,
        AWS_ENDPOINT_URL = false, AWS_REGION = false, AWS_DEFAULT_REGION = false }
      for k, v in pairs(job.env or {}) do env[k] = ghactions.expand(v, ctx) end
      ctx.env = env
      for k, v in pairs(step.env or {}) do env[k] = ghactions.expand(v, ctx) end
      local r = h.run({ "bash", "-e", "-o", "pipefail", "-c", ghactions.expand(step.run, ctx) },
        { env = env, cwd = workspace, timeout = 600 })
      t.eq(r.code, 0, step.name .. ": " .. r.stderr)
      ran = ran + 1
      if step.name == "Nightly backup" then
        t.match(r.stdout, "^nightly prod: ok in [%d.]+s: backup %d+_prod%.backup%.zst%.age .*read%-back every byte "
          .. "read back and checked", "a full read-back with the identity")
        t.no_match(r.stderr, S3.secret_key, "no key in the log")
      end
    else
      t.match(step.uses or "", "^actions/checkout@", "the only step without run: is the checkout")
    end
  end
  t.eq(ran, 3, "three run: steps")
  local installs = h.read(log)
  t.match(installs, "curl %-fsSL %-o /usr/share/postgresql%-common/pgdg/apt%.postgresql%.org%.asc "
    .. "https://www%.postgresql%.org/media/keys/ACCC4CF8%.asc", "PGDG signing key")
  t.match(installs, "tee /etc/apt/sources%.list%.d/pgdg%.list", "PGDG repository")
  t.match(installs, "apt%-get install %-y %-%-no%-install%-recommends postgresql%-client%-17\n", "the server's major")
  t.match(installs, "make %-C .*/pgvault install PREFIX=/usr/local", "pgvault installed")
  t.eq(#backups_in_bucket("prod/"), 1, "one encrypted backup in the bucket")
  local pings = HOOKS:requests()
  t.match(pings[#pings].url, "^/0aa1bb2c%-3d4e%-5f60%-7182%-93a4b5c6d7e8%?rid=", "success ping")
end)

-- The unit's settings: Environment=, LoadCredential=, ExecStart=.
local function read_unit(path)
  local u = { Environment = {}, LoadCredential = {} }
  for line in h.read(path):gmatch("[^\n]+") do
    local k, v = line:match("^(%w+)=(.*)$")
    if k == "Environment" or k == "LoadCredential" then table.insert(u[k], v) elseif k then u[k] = v end
  end
  return u
end

t.test("systemd: the units pass systemd-analyze verify; ExecStart runs with the unit's environment and credentials",
  function()
  local d = h.tmpdir()
  local etc = d .. "/etc-pgvault"
  fs.mkdir_p(etc .. "/credentials")
  local service = h.read(h.root .. "/examples/systemd/pgvault-nightly.service")
  -- The test's binary for /usr/local/bin/pgvault, the test's files for /etc/pgvault.
  local installed = service:gsub("/usr/local/bin/pgvault", h.bin):gsub("/etc/pgvault", etc)
  fs.write_file(d .. "/pgvault-nightly.service", installed)
  fs.write_file(d .. "/pgvault-nightly.timer", h.read(h.root .. "/examples/systemd/pgvault-nightly.timer"))
  local r = h.run({ "systemd-analyze", "verify", d .. "/pgvault-nightly.service", d .. "/pgvault-nightly.timer" })
  t.eq(r.code, 0, "systemd-analyze verify: " .. r.stderr .. r.stdout)
  local timer = h.read(d .. "/pgvault-nightly.timer")
  t.match(timer, "\nPersistent=true\n", "Persistent")
  t.match(timer, "\nRandomizedDelaySec=", "RandomizedDelaySec")
  for _, hardening in ipairs({ "DynamicUser=yes", "ProtectSystem=strict", "PrivateTmp=yes", "NoNewPrivileges=yes" }) do
    t.match(service, "\n" .. hardening:gsub("%p", "%%%0") .. "\n", hardening)
  end

  local unit = read_unit(d .. "/pgvault-nightly.service")
  local identity, recipient = age_key(d)
  h.write(etc .. "/pgvault.conf.lua", h.read(h.root .. "/examples/systemd/pgvault.conf.lua")
    :gsub('recipient = "age1%w+"', 'recipient = "' .. recipient .. '"'))
  h.write(etc .. "/aws_config", string.format("[profile b2]\nregion = %s\nendpoint_url = %s\n", S3.region,
    S3.endpoint))
  local sources = {
    prod_database_url = src, age_identity = h.read(identity), hc_ping_url = HOOKS:url("/sd-ping-uuid"),
    aws_credentials = string.format("[b2]\naws_access_key_id = %s\naws_secret_access_key = %s\n", S3.access_key,
      S3.secret_key),
  }
  -- What systemd does with LoadCredential=: copies each file into a private directory.
  local creds = d .. "/credentials"
  fs.mkdir_p(creds)
  for _, spec in ipairs(unit.LoadCredential) do
    local name, from = spec:match("^([^:]+):(.+)$")
    t.ok(sources[name], "the test knows credential " .. name)
    h.write(from, sources[name])
    h.write(creds .. "/" .. name, h.read(from))
  end
  local env = { CREDENTIALS_DIRECTORY = creds, HOME = "/nonexistent", AWS_PROFILE = false, AWS_ACCESS_KEY_ID = false,
    AWS_SECRET_ACCESS_KEY = false, AWS_ENDPOINT_URL = false, AWS_REGION = false, AWS_DEFAULT_REGION = false }
  for _, e in ipairs(unit.Environment) do
    local k, v = e:match("^([^=]+)=(.*)$")
    env[k] = v:gsub("%%d", creds)
  end
  local argv = {}
  for w in unit.ExecStart:gmatch("%S+") do argv[#argv + 1] = w end
  r = h.run(argv, { env = env, cwd = d, timeout = 600 })
  t.eq(r.code, 0, "ExecStart: " .. r.stderr)
  t.match(r.stdout, "^nightly prod: ok .*read%-back every byte read back", "ran with the credentials")
  t.eq(#backups_in_bucket("prod/") >= 1, true, "backup in the bucket")
  t.no_match(r.stderr, "sd%-ping%-uuid", "the ping URL is a secret")
end)

t.test("cron: the line runs the nightly with its lock and log file; a held lock skips the night", function()
  local d = h.tmpdir()
  local line
  for l in h.read(h.root .. "/examples/cron/pgvault-nightly"):gmatch("[^\n]+") do
    if l:match("^[%d%*]") then line = l end
  end
  local fields = {}
  for f in line:gmatch("%S+") do fields[#fields + 1] = f end
  t.eq({ fields[1], fields[2], fields[3], fields[4], fields[5] }, { "17", "3", "*", "*", "*" }, "03:17 every day")
  t.eq(fields[6], "pgvault", "runs as user pgvault")
  local command = line:match("^%S+%s+%S+%s+%S+%s+%S+%s+%S+%s+%S+%s+(.*)$")
  -- The test's places for /etc/pgvault, /var/log/pgvault and /run/lock.
  for _, sub in ipairs({ "etc", "log", "lock", "b" }) do fs.mkdir_p(d .. "/" .. sub) end
  command = command:gsub("/etc/pgvault", d .. "/etc"):gsub("/var/log/pgvault", d .. "/log"):gsub("/run/lock", d
    .. "/lock")
  h.write(d .. "/etc/pgvault.conf.lua", string.format("environment 'prod' { db = env 'DB_URL', to = %q, "
    .. "drill_every = 'never', keep_last = 3 }\n", d .. "/b"))
  h.write(d .. "/etc/secrets.env", string.format("DB_URL='%s'\nPGVAULT_CONFIG='%s'\n", src,
    d .. "/etc/pgvault.conf.lua"))
  local env = { PATH = BIN_DIR .. ":/usr/local/bin:/usr/bin:/bin" }
  local r = h.run({ "sh", "-c", command }, { env = env, timeout = 600 })
  t.eq(r.code, 0, "cron command: " .. r.stderr)
  local logtext = h.read(d .. "/log/nightly.log")
  t.match(logtext, "\nnightly prod: ok in ", "the summary in the log file")
  t.no_match(logtext, h.pg().password, "no password in the log")
  -- A run still holding the lock: this night's run does nothing.
  local holder = require("pgvault.proc").spawn({ "flock", d .. "/lock/pgvault-nightly.lock", "sleep", "30" })
  require("pgvault.proc").sleep(0.3)
  r = h.run({ "sh", "-c", command }, { env = env, timeout = 60 })
  holder:kill("TERM")
  holder:wait(10)
  holder:close()
  t.eq(r.code, 1, "flock -n gives up")
  t.eq(h.read(d .. "/log/nightly.log"), logtext, "nothing ran")
end)
