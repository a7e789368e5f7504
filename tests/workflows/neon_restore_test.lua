-- covers: scripts/neon_restore.lua scripts/lib/neon_restore.lua scripts/lib/neon.lua scripts/lib/fly.lua
-- pgvault neon-restore end to end against the fake Neon (real databases,
-- PgBouncer pooler, spec-checked) and the fake Fly Machines API; then a
-- failure injected at each step, --dry-run and --rollback.
local cjson = require "cjson"
local t = require "harness.testing"
local h = require "harness.env"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local saas = require "harness.saas"
local s3h = require "harness.s3"

local env = saas.start{}
local pg = h.pg()
local n = 0

-- A fresh application database (see saas.app_database) and its env file.
local function scenario(opts)
  n = n + 1
  local s = env:app_database("shop" .. n, opts)
  s.envfile = s.dir .. "/.env.production"
  h.write(s.envfile, "# prod\nexport DATABASE_URL=\"" .. env:pooled_url(s.db) .. "\"\nSECRET=1\n")
  fs.chmod(s.envfile, 384)
  return s
end

local function run(s, extra, opts)
  local args = { "neon-restore", s.src, "--project", env.project, "--database", s.db, "--fly-app", env.app,
    "--env-file", s.envfile }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  local r = env:pgvault(args, { cwd = s.dir, env = opts and opts.env })
  t.no_match(r.stdout .. r.stderr, pg.password, "no password in the output")
  return r
end

local function rows(db)
  return h.psql(pg.admin_url(db), "SELECT count(*) FROM customers")
end

local function db_exists(name)
  return h.psql(pg.admin_url("postgres"), "SELECT count(*) FROM pg_database WHERE datname = '" .. name .. "'") == "1\n"
end

local function state_file(s)
  local names = fs.listdir(s.dir .. "/.pgvault")
  table.sort(names)
  local path = s.dir .. "/.pgvault/" .. names[#names]
  return cjson.decode(h.read(path)), path
end

t.test("end to end: restore, swap, Fly secret deployed, env file rewritten", function()
  local s = scenario()
  local r = run(s)
  t.eq(r.code, 0, r.stderr)
  t.eq(rows(s.db), "3\n", "the live name has the backup's rows")
  local st, path = state_file(s)
  t.eq(rows(st.old_db), "4\n", "the previous database is kept")
  t.eq(fs.stat(path).mode, 384, "state file 0600")
  t.no_match(h.read(path), pg.password, "no secret in the state file")
  local fst = env:fly_state()
  t.eq(fst.secrets.DATABASE_URL, env:pooled_url(s.db), "the pooled URL")
  t.eq(fst.secrets.OTHER, "x", "other secrets untouched")
  for _, m in ipairs(fst.machines) do
    t.eq(m.updates[1].min_secrets_version, fst.version, "machine " .. m.id .. " deployed")
    t.eq(m.lease, cjson.null, "lease released on " .. m.id)
  end
  t.eq(fst.machines[1].updates[1].skip_launch, false)
  t.eq(fst.machines[2].updates[1].skip_launch, true, "a stopped machine is not started")
  t.eq(h.read(s.envfile), "# prod\nexport DATABASE_URL=\"" .. env:pooled_url(s.db) .. "\"\nSECRET=1\n")
  t.eq(fs.stat(s.envfile).mode, 384)
  t.match(r.stdout, "previous database kept as " .. st.old_db)
  -- pg_restore, the row counts and the carried-over settings went to the
  -- direct host: PgBouncer (the pooled host) never saw the new database
  t.no_match(h.read(env.bouncer.log), "db=" .. st.new_db, "nothing reached the new database through the pooler")
  t.no_match(r.stderr, "instead of the pooled", "handed the direct URL, not switched to it")
  env:check_spec()
  -- later: --resume --drop-old deletes the previous database
  r = env:pgvault({ "neon-restore", "--resume", "--drop-old" }, { cwd = s.dir })
  t.eq(r.code, 0, r.stderr)
  t.eq(db_exists(st.old_db), false, "old database deleted")
  env:check_spec()
end)

t.test("the new database gets the live one's owner, not the role neon-restore connects as", function()
  local s = scenario()
  local owner = "neon_shop_owner"
  h.psql(pg.admin_url("postgres"), string.format("CREATE ROLE %s NOLOGIN; GRANT %s TO %s; "
    .. "ALTER DATABASE %s OWNER TO %s;", owner, owner, pg.user, s.db, owner))
  env:control("neon", "reset", { roles = { { name = owner, password = "unused" } },
    databases = { { name = s.db, owner = owner } } })
  local r = run(s, { "--role", pg.user })
  t.eq(r.code, 0, r.stderr)
  t.eq(rows(s.db), "3\n")
  t.eq(h.psql(pg.admin_url("postgres"), "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '" .. s.db
    .. "'"), owner .. "\n", "the same owner")
  t.eq(state_file(s).owner, owner)
  env:check_spec()
end)

t.test("settings and keys from the configuration file (--env), never from a flag", function()
  local s = scenario()
  h.write(s.dir .. "/pgvault.conf.lua", table.concat({
    'environment "prod" {',
    '  neon_project = "' .. env.project .. '", neon_database = "' .. s.db .. '",',
    '  fly_app = "' .. env.app .. '", env_file = ".env.production",',
    '  neon_api_key = env "MY_NEON_KEY", fly_api_token = env "MY_FLY_TOKEN",',
    "}", "" }, "\n"))
  local r = env:pgvault({ "neon-restore", "--env", "prod", s.src }, { cwd = s.dir, env = {
    NEON_API_KEY = false, FLY_API_TOKEN = false, MY_NEON_KEY = env.neon_key, MY_FLY_TOKEN = env.fly_token } })
  t.eq(r.code, 0, r.stderr)
  t.eq(rows(s.db), "3\n")
  t.eq(env:fly_state().secrets.DATABASE_URL, env:pooled_url(s.db))
  t.match(h.read(s.envfile), "export DATABASE_URL=")
  r = env:pgvault({ "neon-restore", "--neon-api-key", "x" }, { cwd = s.dir })
  t.eq(r.code, 2, "no flag for the API key")
end)

t.test("from a bucket: …/latest of the database streams in; with --jobs 2 on two sessions as it arrives", function()
  local s = scenario()
  local bucket = s3h.make_bucket("neon-restore-source")
  local b = h.pgvault({ "backup", "--db", pg.url(s.db), "--to", "s3://" .. bucket .. "/prod/" }, { env = h.s3().env })
  t.eq(b.code, 0, b.stderr)
  for _, jobs in ipairs({ "1", "2" }) do
    h.psql(pg.url(s.db), "INSERT INTO customers SELECT max(id) + 1, 'later' FROM customers")
    local r = env:pgvault({ "neon-restore", "s3://" .. bucket .. "/prod/latest", "--project", env.project,
      "--database", s.db, "--jobs", jobs }, { cwd = s.dir })
    t.eq(r.code, 0, r.stderr)
    local place = ("s3://" .. bucket .. "/prod"):gsub("%p", "%%%0")
    t.match(r.stderr, "the newest complete backup of database " .. s.db .. " in " .. place .. " is ")
    t.eq(rows(s.db), "4\n", "the bucket's backup, with --jobs " .. jobs)
    if jobs == "2" then t.match(r.stderr, "on 2 sessions as it arrives", "--jobs is restore's") end
    t.match(state_file(s).backup, "^" .. place .. "/%d+_local%.backup%.zst$", "the resolved backup is recorded")
  end
  env:check_spec()
end)

t.test("--source-database: …/latest of a database named otherwise", function()
  local s = scenario()
  n = n + 1
  local target = "shop_target" .. n
  h.createdb(target)
  h.psql(pg.url(target), "CREATE TABLE customers(id int PRIMARY KEY, name text); "
    .. "INSERT INTO customers VALUES (9, 'x');")
  env:control("neon", "reset", { databases = { { name = s.db, owner = pg.user }, { name = target, owner = pg.user } } })
  local args = { "neon-restore", s.dir .. "/backups/latest", "--project", env.project, "--database", target }
  local r = env:pgvault(args, { cwd = s.dir })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "no complete backup of database " .. target .. " in [^\n]*%(it holds backups of " .. s.db .. "%)")
  t.eq(env:writes(), {})
  args[#args + 1] = "--source-database"
  args[#args + 1] = s.db
  r = env:pgvault(args, { cwd = s.dir })
  t.eq(r.code, 0, r.stderr)
  t.eq(rows(target), "3\n", "the backup of " .. s.db .. " replaced " .. target)
  t.eq(rows(s.db), "4\n", s.db .. " untouched")
  r = env:pgvault({ "neon-restore", "--resume", "--source-database", "x" }, { cwd = s.dir })
  t.eq(r.code, 2)
  t.match(r.stderr, "%-%-source%-database cannot change them")
end)

t.test("an encrypted backup: without -i refused before anything changes; with -i restored", function()
  local s = scenario()
  local keys = h.tmpdir()
  t.eq(h.run({ "age-keygen", "-o", keys .. "/age.txt" }).code, 0)
  local recipient = h.run({ "age-keygen", "-y", keys .. "/age.txt" }).stdout:match("%S+")
  local b = h.pgvault({ "backup", "--db", pg.url(s.db), "--to", s.dir .. "/enc", "-r", recipient })
  t.eq(b.code, 0, b.stderr)
  local src = b.stdout:match("([^\n]+)\n?$")
  t.match(src, "%.age$")
  h.psql(pg.url(s.db), "INSERT INTO customers VALUES (5, 'later')")
  local args = { "neon-restore", src, "--project", env.project, "--database", s.db }
  local r = env:pgvault(args, { cwd = s.dir })
  t.eq(r.code, 2, r.stderr)
  t.match(r.stderr, "is encrypted %(age%): give the identity file that opens it with %-i FILE")
  t.eq(env:writes(), {}, "nothing changed")
  args[#args + 1] = "-i"
  args[#args + 1] = keys .. "/age.txt"
  r = env:pgvault(args, { cwd = s.dir })
  t.eq(r.code, 0, r.stderr)
  t.eq(rows(s.db), "4\n")
end)

t.test("--dry-run prints the plan and makes no write call", function()
  local s = scenario()
  local r = run(s, { "--dry-run" })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "POST /projects/")
  t.match(r.stdout, "min_secrets_version")
  t.eq(env:writes(), {}, "no POST/PATCH/DELETE reached either API")
  t.eq(rows(s.db), "4\n")
  t.eq(fs.exists(s.dir .. "/.pgvault"), false)
  -- with --resume and --rollback too
  env:fly_faults{ { method = "POST", path = "/secrets$", times = 10, action = { status = 500 } } }
  t.eq(run(s).code, 1)
  env:fly_faults({})
  env:control("neon", "clear")
  env:control("fly", "clear")
  for _, flag in ipairs({ "--resume", "--rollback" }) do
    r = env:pgvault({ "neon-restore", flag, "--dry-run" }, { cwd = s.dir })
    t.eq(r.code, 0, r.stderr)
    t.match(r.stdout, "swap_in done")
    t.eq(env:writes(), {}, flag .. " --dry-run makes no write call")
  end
end)

t.test("--dry-run with --to DIR: the newest backup of the database, each step with its calls", function()
  local s = scenario()
  local r = env:pgvault({ "neon-restore", "--to", s.dir .. "/backups", "--project", env.project, "--database", s.db,
    "--dry-run", "--jobs", "2" }, { cwd = s.dir, env = { FLY_APP = env.app } })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "\n3%. restore " .. s.src:gsub("%p", "%%%0") .. " into it through the direct host",
    "latest resolved")
  for _, step in ipairs({ "1. resolved: Neon project", "2. create database", "4. swap names", "5. no Fly app",
    "8. keep the previous database" }) do
    t.match(r.stdout, "\n" .. step:gsub("%p", "%%%0"), step)
  end
  t.eq(env:writes(), {})
end)

t.test("without --branch: the project's default branch (default: true), not the first one listed", function()
  local s = scenario()
  local dev = "br-dev-654321"
  env:control("neon", "reset", { default_branch = dev, databases = { { name = s.db, owner = pg.user, branch = dev } } })
  local r = env:pgvault({ "neon-restore", s.src, "--project", env.project, "--database", s.db, "--dry-run" },
    { cwd = s.dir })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "branch dev %(" .. dev:gsub("%-", "%%-") .. "%), database " .. s.db)
  t.match(r.stdout, "read%-write endpoint ep%-dev%-654321")
  t.eq(env:writes(), {})
  env:check_spec()
end)

t.test("what would fail later is found first: one line, what to check, no write call", function()
  local s = scenario()
  local function refused(args, pattern, code)
    local r = env:pgvault(args, { cwd = s.dir })
    t.eq(r.code, code or 2, r.stderr)
    t.match(r.stderr, pattern)
    t.eq(select(2, r.stderr:gsub("\n", "")), 1, "one line: " .. r.stderr)
    t.eq(env:writes(), {}, "nothing changed: " .. r.stderr)
  end
  local base = { "neon-restore", s.src, "--project", env.project, "--database", s.db }
  local function with(...)
    local a = { table.unpack(base) }
    for _, v in ipairs({ ... }) do a[#a + 1] = v end
    return a
  end
  refused({ "neon-restore", s.dir .. "/none.backup", "--project", env.project, "--database", s.db },
    "cannot read .*none%.backup: no such file", 1)
  refused({ "neon-restore", s.src, "--project", "no-such-project", "--database", s.db },
    "Neon has no project no%-such%-project that this API key can reach %(check %-%-project%)", 1)
  refused({ "neon-restore", s.src, "--project", env.project, "--database", "nope" },
    "has no database nope %(it has: [^)]*" .. s.db .. "[^)]*%): check %-%-database")
  refused(with("--branch", "nope"), "has no branch nope %(it has: main, dev%): check %-%-branch")
  refused(with("--fly-app", "other-app"), "Fly%.io has no app other%-app that this token can reach", 1)
  refused(with("--pg-bin", s.dir), "pg_restore", 1)
  refused(with("--stage"), "%-%-stage without %-%-fly%-app")
  refused(with("--lease-wait", "soon"), "%-%-lease%-wait needs a whole number of seconds")
  t.eq(rows(s.db), "4\n")
end)

t.test("a read-only env file or a refused Fly token stops it before anything changes", function()
  local s = scenario()
  fs.chmod(s.envfile, 256)
  local r = run(s)
  t.eq(r.code, 1)
  t.match(r.stderr, "read%-only")
  t.eq(env:writes(), {}, "no write call")
  fs.chmod(s.envfile, 384)
  r = run(s, nil, { env = { FLY_API_TOKEN = "Bearer not-the-token" } })
  t.eq(r.code, 1)
  t.match(r.stderr, "401")
  t.eq(env:writes(), {}, "no write call")
  t.eq(rows(s.db), "4\n")
end)

t.test("--no-swap points the app at the new database and keeps the live one", function()
  local s = scenario()
  local r = run(s, { "--no-swap" })
  t.eq(r.code, 0, r.stderr)
  local st = state_file(s)
  t.eq(rows(s.db), "4\n")
  t.eq(rows(st.new_db), "3\n")
  t.eq(env:fly_state().secrets.DATABASE_URL, env:pooled_url(st.new_db))
  env:check_spec()
end)

t.test("an app with no machines keeps the secret staged, and says so; -v shows no password", function()
  local s = scenario{ machines = {} }
  local args = { "-v", "neon-restore", s.src, "--project", env.project, "--database", s.db, "--fly-app", env.app }
  local r = env:pgvault(args, { cwd = s.dir })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "no machines")
  t.match(r.stdout, "DATABASE_URL set %(secrets version %d+%), staged: the app has no machines")
  t.no_match(r.stdout .. r.stderr, pg.password, "no password, even with -v")
  t.eq(env:fly_state().secrets.DATABASE_URL, env:pooled_url(s.db))
end)

t.test("--stage sets the secret without touching the machines", function()
  local s = scenario()
  local r = run(s, { "--stage" })
  t.eq(r.code, 0, r.stderr)
  for _, m in ipairs(env:fly_state().machines) do t.eq(#m.updates, 0) end
  t.match(r.stdout, "staged")
end)

-- Before the swap: the new database is deleted, the rest as it was.
local function assert_untouched(s, r)
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "as they were")
  t.eq(rows(s.db), "4\n", "the live database is unchanged")
  local st = state_file(s)
  t.eq(db_exists(st.new_db), false, "the new database was deleted")
  t.eq(env:fly_state().secrets.DATABASE_URL, env:pooled_url(s.db))
  t.eq(h.read(s.envfile), "# prod\nexport DATABASE_URL=\"" .. env:pooled_url(s.db) .. "\"\nSECRET=1\n")
end

local function assert_resumes(s)
  local r = env:pgvault({ "neon-restore", "--resume" }, { cwd = s.dir })
  t.eq(r.code, 0, r.stderr)
  t.eq(rows(s.db), "3\n", "finished by --resume")
  t.eq(env:fly_state().secrets.DATABASE_URL, env:pooled_url(s.db))
  env:check_spec()
end

t.test("Neon 500 on creating the database: nothing changed, resumable", function()
  local s = scenario()
  env:neon_faults{ { method = "POST", path = "/databases$", action = { status = 500 } } }
  local r = run(s)
  assert_untouched(s, r)
  t.match(r.stderr, "\npgvault: neon%-restore: step create failed %(POST [^\n]*: HTTP 500 [^\n]*"
    .. "%(request id [%w-]+%)%)%. database [^\n]* are as they were %('pgvault neon%-restore %-%-resume' starts "
    .. "again%)\n$", "one line: what, why, next")
  assert_resumes(s)
end)

t.test("--rollback after a failure before the swap: nothing to undo, said so, nothing changed", function()
  local s = scenario()
  env:neon_faults{ { method = "POST", path = "/databases$", action = { status = 500 } } }
  t.eq(run(s).code, 1)
  env:control("neon", "clear")
  env:control("fly", "clear")
  local r = env:pgvault({ "neon-restore", "--rollback", "--dry-run" }, { cwd = s.dir })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "%-%-rollback would do nothing: the run changed nothing that is still in place")
  r = env:pgvault({ "neon-restore", "--rollback" }, { cwd = s.dir })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "nothing to roll back: [^\n]*%(" .. s.db .. " is as it was%)")
  t.no_match(r.stdout, "restored copy", "there is none")
  t.eq(env:writes(), {}, "no call that changes anything")
  t.eq(rows(s.db), "4\n")
  r = env:pgvault({ "neon-restore", "--resume" }, { cwd = s.dir })
  t.eq(r.code, 2)
  t.match(r.stderr, "rolled back")
end)

t.test("423 Locked and 503 then success: waited for, no failure", function()
  local s = scenario()
  env:neon_faults{ { method = "POST", path = "/databases$", times = 2, action = { status = 423 } },
    { method = "PATCH", times = 1, action = { status = 503, headers = { ["retry-after"] = "1" } } } }
  local r = run(s)
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "answered 503 to renaming database [^\n]*trying again in 1%.0 s", "Retry-After honoured")
  t.eq(rows(s.db), "3\n")
  env:check_spec()
end)

t.test("a network error after the create was done: looked at, not sent twice", function()
  local s = scenario()
  env:neon_faults{ { method = "POST", path = "/databases$", action = "drop_after" } }
  local r = run(s)
  t.eq(r.code, 0, r.stderr)
  local posts = 0
  for _, c in ipairs(env:neon_calls()) do
    if c.method == "POST" and c.path:match("/databases$") then posts = posts + 1 end
  end
  t.eq(posts, 1, "the POST was not repeated")
  t.match(r.stderr, "looking whether Neon made the change")
end)

t.test("network errors after a rename and after the delete were done: looked at, none sent twice", function()
  local s = scenario()
  env:neon_faults{ { method = "PATCH", action = "drop_after" }, { method = "DELETE", action = "drop_after" } }
  local r = run(s, { "--drop-old" })
  t.eq(r.code, 0, r.stderr)
  local sent = { PATCH = 0, DELETE = 0 }
  for _, c in ipairs(env:neon_calls()) do
    if sent[c.method] then sent[c.method] = sent[c.method] + 1 end
  end
  t.eq(sent, { PATCH = 2, DELETE = 1 }, "one call per rename and one delete")
  local _, looked = r.stderr:gsub("looking whether Neon made the change", "")
  t.eq(looked, 2, r.stderr)
  t.eq(rows(s.db), "3\n")
  t.eq(db_exists(state_file(s).old_db), false)
  env:check_spec()
end)

t.test("the create operation fails: nothing changed, resumable", function()
  local s = scenario()
  env:neon_faults{ { method = "POST", path = "/databases$", action = "op_failed" } }
  assert_untouched(s, run(s))
  assert_resumes(s)
end)

t.test("the restore fails (damaged backup): new database deleted, resumable once fixed", function()
  local s = scenario()
  local good = h.read(s.src)
  h.write(s.src, good:sub(1, #good // 2))
  assert_untouched(s, run(s))
  h.write(s.src, good)
  assert_resumes(s)
end)

t.test("renaming the live database fails: nothing changed, resumable", function()
  local s = scenario()
  env:neon_faults{ { method = "PATCH", action = "op_failed" } }
  assert_untouched(s, run(s))
  assert_resumes(s)
end)

t.test("renaming the new database in fails: the live one is put back", function()
  local s = scenario()
  env:neon_faults{ { method = "PATCH", skip = 1, action = { status = 500 } } }
  assert_untouched(s, run(s))
  assert_resumes(s)
end)

t.test("Fly 5xx on setting the secret after the swap: says where things are; --resume finishes", function()
  local s = scenario()
  env:fly_faults{ { method = "POST", path = "/secrets$", times = 10, action = { status = 500 } } }
  local r = run(s, { "--drop-old" })
  t.eq(r.code, 1)
  t.match(r.stderr, "step secret")
  t.match(r.stderr, "is the restored one")
  t.match(r.stderr, "%-%-resume")
  t.eq(rows(s.db), "3\n", "the swap stays")
  local st = state_file(s)
  t.eq(st.steps.secret, "failed")
  t.eq(rows(st.old_db), "4\n", "--drop-old deletes the previous database only once every step before it is done")
  env:fly_faults({})
  assert_resumes(s)
  t.eq(db_exists(st.old_db), false, "deleted at the end of the resumed run")
end)

t.test("a run that died between a rename and its record resumes without renaming twice", function()
  local s = scenario()
  env:fly_faults{ { method = "POST", path = "/secrets$", times = 10, action = { status = 500 } } }
  t.eq(run(s).code, 1)
  env:fly_faults({})
  local st, path = state_file(s)
  st.steps.swap_in = "running"
  h.write(path, cjson.encode(st))
  assert_resumes(s)
  t.eq(rows(st.old_db), "4\n")
end)

t.test("a Fly lease held by someone else: the deploy fails, --resume finishes it", function()
  local s = scenario()
  env:fly_faults{ { method = "POST", path = "/m2/lease$", times = 1000, action = "lease_held" } }
  local r = run(s, { "--lease-wait", "1" })
  t.eq(r.code, 1)
  t.match(r.stderr, "leased by someone else")
  t.match(r.stderr, "not deployed to its machines yet")
  for _, m in ipairs(env:fly_state().machines) do
    t.eq(#m.updates, 0, "no machine updated before every lease was held")
    t.eq(m.lease, cjson.null, "no lease left behind")
  end
  env:fly_faults({})
  assert_resumes(s)
  for _, m in ipairs(env:fly_state().machines) do t.eq(#m.updates, 1, "each machine updated once") end
end)

t.test("--rollback puts the old database and the secret back", function()
  local s = scenario()
  t.eq(run(s, { "--no-swap" }).code, 0)
  local st = state_file(s)
  local r = env:pgvault({ "neon-restore", "--rollback" }, { cwd = s.dir })
  t.eq(r.code, 0, r.stderr)
  t.eq(env:fly_state().secrets.DATABASE_URL, env:pooled_url(s.db), "the secret names the old database again")
  t.eq(h.read(s.envfile), "# prod\nexport DATABASE_URL=\"" .. env:pooled_url(s.db) .. "\"\nSECRET=1\n")
  t.eq(rows(s.db), "4\n")
  t.eq(rows(st.new_db), "3\n", "the restored copy is kept")
  env:check_spec()
  r = env:pgvault({ "neon-restore", "--resume" }, { cwd = s.dir })
  t.eq(r.code, 2, "a rolled-back run is not resumed")
  t.match(r.stderr, "rolled back")
end)

t.test("--rollback of an app that had no DATABASE_URL removes it again", function()
  local s = scenario()
  env:control("fly", "reset", { secrets = { OTHER = "x" }, machines = { { id = "m1", state = "started" } } })
  t.eq(run(s).code, 0)
  t.eq(env:fly_state().secrets.DATABASE_URL, env:pooled_url(s.db))
  local r = env:pgvault({ "neon-restore", "--rollback" }, { cwd = s.dir })
  t.eq(r.code, 0, r.stderr)
  t.eq(env:fly_state().secrets.DATABASE_URL, nil)
  t.eq(env:fly_state().secrets.OTHER, "x")
end)

t.test("a --rollback stopped by a Fly error says where it is and finishes when run again", function()
  local s = scenario()
  t.eq(run(s).code, 0)
  local st = state_file(s)
  env:fly_faults{ { method = "POST", path = "/secrets$", times = 10, action = { status = 500 } } }
  local r = env:pgvault({ "neon-restore", "--rollback" }, { cwd = s.dir })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "%-%-rollback failed %([^\n]*HTTP 500[^\n]*%)%. database " .. s.db .. " is the previous one "
    .. "again %(the restored copy is " .. st.new_db .. "%); the Fly app " .. env.app:gsub("%p", "%%%0")
    .. "'s DATABASE_URL is not set back yet; [^\n]* is not rewritten back yet: run 'pgvault neon%-restore "
    .. "%-%-rollback' again to finish it\n$")
  t.eq(rows(s.db), "4\n", "the databases were renamed back")
  env:fly_faults({})
  env:control("neon", "clear")
  r = env:pgvault({ "neon-restore", "--rollback" }, { cwd = s.dir })
  t.eq(r.code, 0, r.stderr)
  for _, c in ipairs(env:neon_calls()) do
    t.ok(c.method == "GET", "not renamed twice: " .. c.method .. " " .. c.path)
  end
  t.eq(rows(s.db), "4\n")
  t.eq(rows(st.new_db), "3\n")
  for _, m in ipairs(env:fly_state().machines) do t.eq(#m.updates, 2, "the previous URL deployed to " .. m.id) end
  t.eq(h.read(s.envfile), "# prod\nexport DATABASE_URL=\"" .. env:pooled_url(s.db) .. "\"\nSECRET=1\n")
  env:check_spec()
end)

t.test("--resume and --rollback take the run's settings from its record; each says what it does", function()
  local s = scenario()
  t.eq(run(s).code, 0)
  local function said(args, code, pattern)
    local r = env:pgvault(args, { cwd = s.dir })
    t.eq(r.code, code, r.stderr)
    t.match(r.stdout .. r.stderr, pattern)
    return r
  end
  said({ "neon-restore", "--resume", s.src }, 2, "%-%-resume takes no SRC")
  said({ "neon-restore", "--resume", "--rollback" }, 2, "exclude each other")
  said({ "neon-restore", "--resume", "--no-swap" }, 2, "%-%-no%-swap cannot change them")
  said({ "neon-restore", "--rollback", "--database", "x" }, 2, "%-%-database cannot change them")
  env:control("neon", "clear")
  env:control("fly", "clear")
  said({ "neon-restore", "--resume" }, 0, "finished at [^\n]*: nothing left to do")
  t.eq(env:writes(), {}, "a finished run is not run again")
  said({ "neon-restore", "--rollback" }, 0, "rolled back")
  env:control("neon", "clear")
  env:control("fly", "clear")
  said({ "neon-restore", "--rollback" }, 0, "was rolled back already")
  t.eq(env:writes(), {}, "not rolled back twice")
  t.eq(rows(s.db), "4\n")
  -- after --drop-old there is nothing to roll back to
  local s2 = scenario()
  t.eq(run(s2, { "--drop-old" }).code, 0)
  local r = env:pgvault({ "neon-restore", "--rollback" }, { cwd = s2.dir })
  t.eq(r.code, 2)
  t.match(r.stderr, "deleted the previous database %(%-%-drop%-old%): there is nothing to roll back to")
  t.eq(rows(s2.db), "3\n", "the restored database stays")
end)

t.test("the app's session on the live database (through the pooler) is ended for the swap, and logged", function()
  local s = scenario()
  local sleeper = proc.spawn({ pg.bindir .. "/psql", "-X", "-q", "-h", env.bouncer.addr,
    "-p", tostring(math.tointeger(pg.port)), "-U", pg.user, "-d", s.db, "-c", "SELECT pg_sleep(60);",
    stdout = "pipe", stderr = "pipe", env = { PGPASSWORD = pg.password } })
  local deadline = proc.now() + 10
  while proc.now() < deadline and h.psql(pg.admin_url("postgres"),
    "SELECT count(*) FROM pg_stat_activity WHERE datname = '" .. s.db .. "' AND query LIKE '%pg_sleep%'") == "0\n" do
    proc.sleep(0.05)
  end
  local r = run(s)
  sleeper:wait(10)
  sleeper:close()
  t.eq(r.code, 0, r.stderr)
  t.match(h.read(env.bouncer.log), "login attempt: db=" .. s.db, "the session went through PgBouncer")
  local pid = r.stderr:match("terminating session (%d+) %(user " .. pg.user .. ", [^)]*%) on database " .. s.db)
  t.ok(pid, r.stderr)
  local _, count = r.stderr:gsub("terminating session " .. pid .. " ", "")
  t.eq(count, 1, "logged once")
  t.eq(rows(s.db), "3\n", "swapped")
  t.eq(rows(state_file(s).old_db), "4\n")
end)

t.test("the live database's settings and comment carry over to the restored one, as restore does", function()
  local s = scenario()
  h.psql(pg.admin_url("postgres"), "COMMENT ON DATABASE " .. s.db .. " IS 'production'; ALTER DATABASE " .. s.db
    .. " SET work_mem = '7MB';")
  local r = run(s)
  t.eq(r.code, 0, r.stderr)
  t.eq(h.psql(pg.admin_url(s.db), "SHOW work_mem"), "7MB\n")
  t.eq(h.psql(pg.admin_url("postgres"), "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE "
    .. "datname = '" .. s.db .. "'"), "production\n")
  t.eq(rows(s.db), "3\n")
end)

t.test("--rollback after a swap renames both back", function()
  local s = scenario()
  t.eq(run(s).code, 0)
  local st = state_file(s)
  local r = env:pgvault({ "neon-restore", "--rollback", "--dry-run" }, { cwd = s.dir })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, ("--rollback would rename the databases back (" .. s.db .. " to " .. st.new_db .. ", " .. st.old_db
    .. " to " .. s.db .. "); point the Fly app " .. env.app .. "'s DATABASE_URL back at " .. s.db
    .. " and deploy it; rewrite DATABASE_URL in " .. s.envfile .. " back\n"):gsub("%p", "%%%0"))
  r = env:pgvault({ "neon-restore", "--rollback" }, { cwd = s.dir })
  t.eq(r.code, 0, r.stderr)
  t.eq(rows(s.db), "4\n", "the previous database is back under its name")
  t.eq(rows(st.new_db), "3\n")
  t.eq(db_exists(st.old_db), false)
end)

t.test("close the fakes", function() env:close() end)
