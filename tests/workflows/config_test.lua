-- covers: scripts/config.lua scripts/lib/config.lua
-- pgvault config check: where the file is found (--config, $PGVAULT_CONFIG,
-- ./pgvault.conf.lua, ~/.config/pgvault/config.lua), the resolved settings
-- with secrets masked and their sources, every problem with file and line,
-- and a file that tries to act instead of describe.
local t = require "harness.testing"
local h = require "harness.env"
local fs = require "pgvault.fs"

local CONF = [[
defaults { keep_daily = 7, drill_every = "day" }
environment "local" {
  db = "postgresql://localhost/app",
  to = "db_backups",
}
environment "prod" {
  db = env "PGV_TEST_PROD_DB",
  to = "s3://backups/prod/",
  ping = file "%s",
  webhook_secret = env "PGV_TEST_HOOK_SECRET",
  keep_daily = 14,
}
]]

local function setup()
  local d = h.tmpdir()
  fs.write_file(d .. "/ping", "https://hc-ping.com/0f0f0f0f-1111-2222-3333-444444444444\n", { mode = 384 })
  fs.write_file(d .. "/pgvault.conf.lua", CONF:format(d .. "/ping"), { mode = 384 })
  return d
end

local ENV = { PGV_TEST_PROD_DB = "postgresql://app:hunter2secret@db.example/app",
  PGV_TEST_HOOK_SECRET = "whsec-abcdefgh", PGVAULT_CONFIG = false, PGVAULT_ENV = false, XDG_CONFIG_HOME = false }

local function check(args, opts)
  opts = opts or {}
  local env = {}
  for k, v in pairs(ENV) do env[k] = v end
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local argv = { "config", "check" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return h.pgvault(argv, { cwd = opts.cwd, env = env })
end

t.test("config check: every environment, secrets masked, each value's source", function()
  local d = setup()
  local r = check({}, { cwd = d })
  t.eq(r.code, 0, "exit code: " .. r.stderr)
  t.match(r.stdout, "^configuration file: pgvault%.conf%.lua\n", "found in the working directory")
  t.match(r.stdout, "\nenvironment local\n", "local")
  t.match(r.stdout, "\n  keep_daily +7 +defaults, pgvault%.conf%.lua:1\n", "from the defaults")
  t.match(r.stdout, "\nenvironment prod\n", "prod")
  t.match(r.stdout, "\n  db +postgresql://app:%*%*%*@db%.example/app +env PGV_TEST_PROD_DB %(pgvault%.conf%.lua:7%)\n",
    "db from the environment, password masked")
  t.match(r.stdout, "\n  ping +https://hc%-ping%.com/%*%*%* +file .*/ping %(pgvault%.conf%.lua:9%)\n", "ping masked")
  t.match(r.stdout, "\n  webhook_secret +%*%*%* +env PGV_TEST_HOOK_SECRET", "secret masked")
  t.match(r.stdout, "\n  keep_daily +14 +pgvault%.conf%.lua:11\n", "the environment overrides the defaults")
  t.match(r.stdout, "\n  suffix +prod +the environment's name\n", "suffix")
  t.match(r.stdout, "\n  readback +true +default\n", "defaults of keys")
  t.match(r.stdout, "\n  drill_every +day +defaults", "drill from defaults")
  t.no_match(r.stdout .. r.stderr, "hunter2secret", "db password")
  t.no_match(r.stdout .. r.stderr, "0f0f0f0f", "ping token")
  t.no_match(r.stdout .. r.stderr, "whsec", "webhook secret")
end)

t.test("config check --env NAME with flags: the flag wins and says so; --json", function()
  local d = setup()
  local r = check({ "--env", "prod", "--keep-daily", "3", "--json" }, { cwd = d })
  t.eq(r.code, 0, "exit code: " .. r.stderr)
  local j = require("cjson").decode(r.stdout)
  t.eq(#j.environments, 1, "one environment")
  local found
  for _, s in ipairs(j.environments[1].settings) do if s.key == "keep_daily" then found = s end end
  t.eq(found, { key = "keep_daily", value = "3", source = "--keep-daily" })
end)

t.test("where the file is found: --config, $PGVAULT_CONFIG, ./pgvault.conf.lua, ~/.config/pgvault", function()
  local d = setup()
  local other = h.tmpdir()
  fs.write_file(other .. "/c.lua", "environment 'only' { db = 'x' }\n", { mode = 384 })
  local empty = h.tmpdir()
  t.match(check({ "--config", other .. "/c.lua" }, { cwd = d }).stdout, "environment only", "--config first")
  t.match(check({}, { cwd = d, env = { PGVAULT_CONFIG = other .. "/c.lua" } }).stdout, "environment only",
    "$PGVAULT_CONFIG before ./pgvault.conf.lua")
  local home = h.tmpdir()
  fs.mkdir_p(home .. "/.config/pgvault")
  fs.write_file(home .. "/.config/pgvault/config.lua", "environment 'home' { db = 'x' }\n", { mode = 384 })
  t.match(check({}, { cwd = empty, env = { HOME = home } }).stdout, "environment home", "~/.config/pgvault")
  t.match(check({}, { cwd = empty, env = { HOME = "/nonexistent", XDG_CONFIG_HOME = home .. "/.config" } }).stdout,
    "environment home", "$XDG_CONFIG_HOME")
  local r = check({}, { cwd = empty, env = { HOME = "/nonexistent" } })
  t.eq(r.code, 1, "none found")
  t.match(r.stderr,
    "no configuration file: looked for %./pgvault%.conf%.lua, /nonexistent/%.config/pgvault/config%.lua",
    "says where it looked")
end)

t.test("a typo: every problem with file and line, exit 1", function()
  local d = h.tmpdir()
  fs.write_file(d .. "/pgvault.conf.lua", [[
environment "prod" {
  db = "x",
  keep_dayly = 7,
  keep_weekly = "four",
}
]], { mode = 384 })
  local r = check({}, { cwd = d })
  t.eq(r.code, 1, "exit code")
  t.match(r.stderr, "pgvault: config: pgvault%.conf%.lua:3: unknown key 'keep_dayly' in environment prod %(did you "
    .. "mean keep_daily%?%)\n", "first problem")
  t.match(r.stderr, "pgvault: config: pgvault%.conf%.lua:4: keep_weekly must be an integer", "second problem")
  t.match(r.stderr, "pgvault%.conf%.lua has 2 problems", "summary")
end)

t.test("an unresolvable reference fails its environment only, naming the variable and the line", function()
  local d = setup()
  local r = check({}, { cwd = d, env = { PGV_TEST_PROD_DB = false } })
  t.eq(r.code, 1, "exit code")
  t.match(r.stdout, "environment local\n  db ", "local still shown")
  t.match(r.stdout, "environment prod\n  error: pgvault%.conf%.lua:7: db comes from the environment variable "
    .. "PGV_TEST_PROD_DB, which is not set", "prod's problem")
end)

t.test("a configuration that tries to act does nothing", function()
  local d = h.tmpdir()
  fs.write_file(d .. "/pgvault.conf.lua", string.format(
    "environment 'p' { db = 'x' }\nos.execute('touch %s/pwned')\n", d), { mode = 384 })
  local r = check({}, { cwd = d })
  t.eq(r.code, 1, "exit code")
  t.match(r.stderr, "pgvault%.conf%.lua:2: 'os' is not available in a configuration file", "says so")
  t.ok(not fs.exists(d .. "/pwned"), "nothing ran")
end)

t.test("backup, list, verify and restore take --env: the environment fills in what the flags leave out", function()
  local db = h.createdb("config_env_test")
  h.psql(db, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 42);")
  local d = h.tmpdir()
  local keygen = h.run({ "age-keygen", "-o", d .. "/key.txt" })
  t.eq(keygen.code, 0, keygen.stderr)
  local recipient = h.read(d .. "/key.txt"):match("# public key: (age1%w+)")
  fs.write_file(d .. "/pgvault.conf.lua", string.format([[
environment "prod" {
  db = env "PGV_TEST_DB",
  to = "nightly_dir",
  recipient = %q,
  identity = %q,
}
]], recipient, d .. "/key.txt"), { mode = 384 })
  local env = { PGV_TEST_DB = db, PGVAULT_CONFIG = false, PGVAULT_ENV = false }
  local r = h.pgvault({ "backup", "--env", "prod" }, { cwd = d, env = env })
  t.eq(r.code, 0, "backup: " .. r.stderr)
  local path = r.stdout:match("([^\n]+)\n?$")
  t.match(path, "^nightly_dir/%d+_prod%.backup%.zst%.age$", "the environment's place, name and recipient")
  r = h.pgvault({ "list", "--env", "prod", "--json" }, { cwd = d, env = env })
  t.eq(r.code, 0, "list: " .. r.stderr)
  t.eq(#require("cjson").decode(r.stdout), 1, "lists the environment's destination")
  r = h.pgvault({ "verify", "--env", "prod", path }, { cwd = d, env = env })
  t.eq(r.code, 0, "verify decrypts with the environment's identity: " .. r.stderr)
  r = h.pgvault({ "restore", "--env", "prod", "nightly_dir/latest" }, { cwd = d, env = env })
  t.eq(r.code, 2, "restore needs --db even with --env")
  t.match(r.stderr, "%-%-db", "says so")
  local target = "config_env_restored"
  h.dropdb(target)
  r = h.pgvault({ "restore", "--env", "prod", "nightly_dir/latest", "--database", "config_env_test", "--db",
    h.pg().url(target) }, { cwd = d, env = env })
  t.eq(r.code, 0, "restore with the environment's identity: " .. r.stderr)
  t.eq(h.psql(h.pg().url(target), "SELECT count(*) FROM t;"), "42\n", "restored")
  h.dropdb(target)
end)

t.test("config check: every setting's flag takes effect over the file and says so", function()
  local d = setup()
  local config = require "lib.config"
  local args, want = { "--env", "prod", "--json" }, {}
  for _, k in ipairs(config.KEYS) do
    local opt = config.option(k.name)
    local flag = "--" .. opt[1]
    args[#args + 1] = flag
    if k.type == "string" or k.type == "list" then
      args[#args + 1] = k.name:match("url$") and "https://example.test/" .. k.name or "value-" .. k.name
    elseif k.type == "integer" or k.type == "count" then
      args[#args + 1] = tostring(k.min or 7)
    elseif k.type == "duration" then
      args[#args + 1] = "3d"
    elseif k.type == "enum" then
      args[#args + 1] = k.values[#k.values]
    end
    want[k.name] = flag
  end
  local r = check(args, { cwd = d })
  t.eq(r.code, 0, r.stderr)
  local got, values = {}, {}
  for _, s in ipairs(require("cjson").decode(r.stdout).environments[1].settings) do
    got[s.key], values[s.key] = s.source, s.value
  end
  for name, flag in pairs(want) do t.eq(got[name], flag, name .. " comes from " .. flag) end
  t.eq(values.readback, "false", "--no-readback turns the read-back off")
  t.eq(values.all_databases, "true", "--all-databases on")
end)
