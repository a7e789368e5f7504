-- covers: scripts/lib/config.lua
-- lib.config: the configuration file's vocabulary (environment, defaults,
-- env and file references), the sandbox it runs in, unknown keys and wrong
-- types reported with file and line (a typo never silently drops a
-- setting), and config.apply: flags over the file over the defaults.
local t = require "harness.testing"
local h = require "harness.env"
local fs = require "pgvault.fs"
local cli = require "lib.cli"
local config = require "lib.config"

local function load(text) return config.load_text(text, "test.conf.lua") end

local function write_conf(text, mode)
  local d = h.tmpdir()
  local path = d .. "/pgvault.conf.lua"
  fs.write_file(path, text, { mode = mode or 384 })
  return path
end

local SPEC = {
  usage = "pgvault test [options]",
  options = config.with_options({ config.option("db"), config.option("to"), config.option("suffix"),
    config.option("keep_daily"), config.option("keep_last"), config.option("keep_within"),
    config.option("recipient"), config.option("readback"), config.option("all_databases"),
    config.option("drill_every"), { "json", nil, false, "not a key" } }),
}

local function run(argv, conf_path)
  local a = {}
  for i, v in ipairs(argv) do a[i] = v end
  if conf_path then
    a[#a + 1] = "--config"
    a[#a + 1] = conf_path
  end
  return config.apply(cli.parse(a, SPEC), SPEC)
end

t.test("environments, defaults and references load; values are typed and normalised", function()
  local c = load([[
-- shared
defaults { keep_daily = 7, to = "db_backups" }
environment "local" {
  db = "postgresql://localhost/app",
}
environment "prod" {
  db = env "PROD_DATABASE_URL",
  to = "s3://bucket/prod/",
  recipient = "age1abc",
  trust = { "a.pub", file "/run/secrets/b" },
  keep_daily = 14, keep_monthly = "unlimited",
  readback = false,
}
]])
  t.eq(c.order, { "local", "prod" })
  local prod = config.environment(c, "prod")
  t.eq(prod.values.keep_daily, { value = 14, line = 11 }, "the environment's own value and its line")
  t.eq(prod.values.keep_monthly.value, -1, "unlimited")
  t.eq(prod.values.to.value, "s3://bucket/prod/")
  t.eq(prod.values.recipient.value, { "age1abc" }, "a single string becomes a list")
  t.eq(prod.values.readback.value, false)
  t.eq(tostring(prod.values.db.value), 'env "PROD_DATABASE_URL"', "a reference, not a value")
  local loc = config.environment(c, "local")
  t.eq(loc.values.keep_daily, { value = 7, line = 2, from = "defaults" }, "defaults apply")
  t.raises(function() config.environment(c, "prd") end, "environment 'prd' is not defined in test.conf.lua %(it has: "
    .. "local, prod%)")
  t.raises(function() config.environment(c, nil) end, "choose one with %-%-env NAME")
end)

t.test("a typo is an error with file and line, and a suggestion; every problem is counted", function()
  local e = t.raises(function() load([[
environment "prod" {
  db = "x",
  keep_dayly = 7,
  keep_weekly = "4",
}
]]) end, "^test%.conf%.lua:3: unknown key 'keep_dayly' in environment prod %(did you mean keep_daily%?%) %(and 1 "
    .. "more problem: run 'pgvault config check'%)$")
  t.eq(e.kind, "config", "kind")
  t.eq(e.problems[2], 'test.conf.lua:4: keep_weekly must be an integer or "unlimited", not "4"', "second problem")
end)

t.test("wrong types name the key and what it must be", function()
  local cases = {
    { "keep_last = -3", "keep_last must be an integer or \"unlimited\", not %-3" },
    { "keep_within = '2w'", "keep_within must be a duration like 7d, 12h or 1y6m, not \"2w\"" },
    { "readback = 'no'", "readback must be true or false, not \"no\"" },
    { "drill_every = 'month'", "drill_every must be week, day or never, not \"month\"" },
    { "recipient = { 'a', 3 }", "recipient must be a string or a list of strings" },
    { "to = ''", "to must be a string, not \"\"" },
    { "level = 0", "level must be an integer %(at least 1%), not 0" },
    { "keep_daily = env 'X'", "keep_daily must be an integer or \"unlimited\", not env \"X\"" },
    { "[1] = 'x'", "unknown key 1 in environment p" },
  }
  for _, c in ipairs(cases) do
    t.raises(function() load("environment 'p' {\n  db = 'x',\n  " .. c[1] .. ",\n}\n") end,
      "^test%.conf%.lua:%d: " .. c[2], c[1])
  end
end)

t.test("the sandbox: no io, os, require, load; it describes, it does not act", function()
  for _, code in ipairs({ "os.execute('touch /tmp/pwned')", "io.open('/etc/passwd')", "require 'pgvault.fs'",
    "load('x=1')()", "dofile('/etc/passwd')", "debug.getinfo(1)", "string.rep('x', 10)", "package.loaded.x = 1",
    "collectgarbage()" }) do
    t.raises(function() load("environment 'p' { db = 'x' }\n" .. code .. "\n") end,
      "^test%.conf%.lua:2: .*not available in a configuration file", code)
  end
  t.raises(function() load("environment 'p' { db = 'x' }\nwhile true do end\n") end, "runs too long")
  t.raises(function() load("environment 'p' { db = 'x' }\nenvironment 'p' { db = 'y' }\n") end,
    "test%.conf%.lua:2: environment p is defined twice %(first on line 1%)")
  t.raises(function() load("environment '../x' { db = 'y' }\n") end, "letters, digits, %- and _")
  t.raises(function() load("-- nothing\n") end, "no environment defined")
  t.raises(function() load("environment 'p' {\n") end, "test%.conf%.lua:2: .*expected")
  t.raises(function() load(string.dump(function() end)) end, "attempt to load a binary chunk")
  -- What it may use: locals, string and math functions.
  local c = load("local region = ('US-WEST-004'):lower()\n"
    .. "environment 'p' { region = region, level = math.max(1, 3) }\n")
  t.eq(config.environment(c, "p").values.region.value, "us-west-004")
end)

t.test("apply: flags over the file over defaults; suffix from the environment; sources recorded", function()
  local path = write_conf([[
defaults { keep_daily = 7 }
environment "prod" {
  db = "postgresql://app:pw@db/app",
  to = "s3://b/prod/",
  keep_last = 3,
  recipient = { "age1one", "age1two" },
  readback = false,
}
environment "local" { db = "postgresql:///app" }
]])
  local o = run({ "--env", "prod", "--keep-last", "5" }, path)
  t.eq(o.db, "postgresql://app:pw@db/app")
  t.eq(o.keep_last, 5, "flag wins, as an integer")
  t.eq(o.keep_daily, 7, "defaults")
  t.eq(o.suffix, "prod", "suffix: the environment's name")
  t.eq(o.recipient, { "age1one", "age1two" })
  t.eq(o.readback, false, "from the file")
  t.eq(o.drill_every, "week", "key default")
  t.eq(o.all_databases, false, "boolean default")
  t.eq(o.settings.env, "prod")
  t.eq(o.settings.sources.keep_last, "--keep-last")
  t.eq(o.settings.sources.db, path .. ":3")
  t.eq(o.settings.sources.keep_daily, "defaults, " .. path .. ":1")
  t.eq(o.settings.sources.suffix, "the environment's name")
  t.eq(o.settings.sources.drill_every, "default")
  local o2 = run({ "--env", "prod", "-r", "age1flag", "--no-readback", "--suffix", "x" }, path)
  t.eq(o2.recipient, { "age1flag" }, "a repeated flag replaces the list")
  t.eq(o2.suffix, "x")
  local o3 = run({ "--env", "local" }, path)
  t.eq(o3.readback, true, "readback defaults to true")
  local o4 = run({ "--env", "local", "--no-readback" }, path)
  t.eq(o4.readback, false, "--no-readback turns it off (regression: it set readback = true)")
  t.eq(o4.settings.sources.readback, "--no-readback", "and says so")
  t.eq(o3.keep_last, nil, "nothing set")
end)

t.test("apply without --env: flags and defaults only, no file read; flag values are checked", function()
  local o = run({ "--db", "x", "--keep-daily", "unlimited" })
  t.eq(o.settings.env, nil)
  t.eq(o.keep_daily, -1)
  t.eq(o.recipient, {}, "an empty list, as cli.parse gives")
  t.raises(function() run({ "--keep-daily", "seven" }) end, "%-%-keep%-daily must be an integer")
  t.raises(function() run({ "--keep-within", "2w" }) end, "%-%-keep%-within must be a duration")
  t.raises(function() run({ "--drill-every", "month" }) end, "%-%-drill%-every must be week, day or never")
end)

t.test("references resolve at use: environment variables and files; missing ones say where", function()
  local d = h.tmpdir()
  fs.write_file(d .. "/secret", "s3cr3t-value\n")
  local path = write_conf(string.format([[
environment "ok" { db = env "HOME", to = file %q }
environment "novar" { db = env "PGVAULT_TEST_UNSET_VARIABLE" }
environment "nofile" {
  db = file %q,
}
]], d .. "/secret", d .. "/missing"))
  local o = run({ "--env", "ok" }, path)
  t.eq(o.db, os.getenv("HOME"))
  t.eq(o.to, "s3cr3t-value", "file content without its newline")
  t.eq(o.settings.sources.db, "env HOME (" .. path .. ":1)")
  t.raises(function() run({ "--env", "novar" }, path) end, path:gsub("%p", "%%%0") .. ":2: db comes from the "
    .. "environment variable PGVAULT_TEST_UNSET_VARIABLE, which is not set")
  t.raises(function() run({ "--env", "nofile" }, path) end, ":4: db comes from the file .*/missing, which cannot "
    .. "be read")
  t.eq(run({ "--env", "novar", "--db", "given" }, path).db, "given", "a flag spares the reference")
  local p2 = write_conf('environment "sd" {\n  db = credential "db_url",\n}\n')
  t.raises(function() run({ "--env", "sd" }, p2) end, ":2: db comes from the systemd credential db_url, but "
    .. "%$CREDENTIALS_DIRECTORY is not set")
  t.raises(function() load("environment 'p' { db = credential '../x' }") end, "credential needs the name")
end)

t.test("the file must be a regular file nobody else may write", function()
  local path = write_conf("environment 'p' { db = 'x' }\n", 438)
  fs.chmod(path, 438) -- 0666
  t.raises(function() run({ "--env", "p" }, path) end, "writable by everyone")
  t.raises(function() run({ "--env", "p" }, h.tmpdir()) end, "is not a regular file")
  t.raises(function() run({ "--env", "p" }, "/nonexistent/pgvault.conf.lua") end, "does not exist")
end)

t.test("every key has a type, help and a flag; names are unique; show masks secrets", function()
  local seen = {}
  for _, k in ipairs(config.KEYS) do
    t.ok(not seen[k.name], "unique " .. k.name)
    seen[k.name] = true
    t.ok(k.name:match("^[a-z][a-z0-9_]*$"), "name " .. k.name)
    t.ok(type(k.help) == "string" and #k.help > 10, "help for " .. k.name)
    local opt = config.option(k.name)
    t.eq(opt.key, k.name)
  end
  t.eq(config.option("readback")[1], "no-readback", "a key that defaults to true has a --no- flag")
  t.eq(config.show(config.BY_NAME.db, "postgresql://app:pw@h/db"), "postgresql://app:***@h/db")
  t.eq(config.show(config.BY_NAME.db, "host=h password='a b' dbname=x"), "host=h password=*** dbname=x")
  t.eq(config.show(config.BY_NAME.db, "host=h password=ab dbname=x"), "host=h password=*** dbname=x")
  t.eq(config.show(config.BY_NAME.db, "postgresql://h/db?sslmode=require&password=zz"),
    "postgresql://h/db?sslmode=require&password=***")
  t.eq(config.show(config.BY_NAME.ping, "https://hc-ping.com/abc-def"), "https://hc-ping.com/***")
  t.eq(config.show(config.BY_NAME.webhook_secret, "x"), "***")
  t.eq(config.show(config.BY_NAME.keep_daily, 7), "7")
end)

t.test("the fuzz corpus replays: a configuration or a config error, nothing else", function()
  local dir = h.root .. "/tests/fuzz/config_corpus"
  local names = fs.listdir(dir)
  t.ok(#names >= 20, "corpus present")
  local loaded, refused = 0, 0
  for _, name in ipairs(names) do
    local ok, res = pcall(config.load_text, fs.read_file(dir .. "/" .. name), "fuzz.conf.lua")
    if ok then
      t.ok(#res.order >= 1, name .. ": an environment")
      loaded = loaded + 1
    else
      t.eq(type(res) == "table" and res.kind, "config", name .. ": " .. tostring(res))
      refused = refused + 1
    end
  end
  t.ok(loaded > 3 and refused > 3, string.format("both outcomes seen (%d loaded, %d refused)", loaded, refused))
end)
