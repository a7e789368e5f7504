-- covers: scripts/neon_restore.lua scripts/lib/trust.lua
-- neon-restore --trust (issues 11 and 16: "signature and manifest checked as
-- restore does"): anyone who can write the bucket or the backup directory
-- can replace an archive under an intact signed manifest, and restoring
-- its SQL into production would run it with the owner's rights. With
-- trusted keys (--trust, PGVAULT_TRUST or `trust` in the configuration)
-- neon-restore accepts only what restore accepts, and refuses the rest
-- before anything changes on the Neon account or the Fly app.
local h = require "harness.env"
local saas = require "harness.saas"
local t = require "harness.testing"
local f = require "security.sign_fixtures"

local env = saas.start{}
local pg = env.pg
local MARKER = "neon_trust_marker"

local keys = h.tmpdir()
assert(h.pgvault({ "keygen", "--sign", "-o", keys .. "/sign.key" }).code == 0)
local PUB = keys .. "/sign.key.pub"

-- The application database `db` (3 customers and enough other rows that
-- its backup is larger than the attacker's archive), backed up with
-- backup's arguments `extra`, then changed (a 4th customer); the fakes
-- reset to know it. Returns { db, dir, src }.
local function app_database(db, extra)
  f.drop_role(MARKER)
  h.createdb(db)
  h.psql(pg.url(db), "CREATE TABLE customers(id int PRIMARY KEY, name text);"
    .. "INSERT INTO customers SELECT i, 'c' || i FROM generate_series(1, 3) i;"
    .. "CREATE TABLE filler AS SELECT i, md5(i::text) AS h FROM generate_series(1, 5000) i;")
  local dir = h.tmpdir()
  local args = { "backup", "--db", pg.url(db), "--to", dir .. "/backups" }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  local b = h.pgvault(args)
  assert(b.code == 0, "backup of " .. db .. " failed: " .. b.stderr)
  h.psql(pg.url(db), "INSERT INTO customers VALUES (4, 'after the backup');")
  env:control("neon", "reset", { databases = { { name = db, owner = pg.user } } })
  env:control("fly", "reset", { secrets = { DATABASE_URL = env:pooled_url(db) },
    machines = { { id = "m1", state = "started" } } })
  return { db = db, dir = dir, src = b.stdout:match("([^\n]+)\n?$") }
end

local function neon_restore(s, extra, opts)
  local args = { "neon-restore", s.src, "--project", env.project, "--database", s.db, "--fly-app", env.app }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  return env:pgvault(args, { cwd = s.dir, env = opts and opts.env })
end

local function rows(db) return h.psql(pg.admin_url(db), "SELECT count(*) FROM customers") end

-- Refused as it must be: exit 1 with `pattern`, no call that changes
-- anything reached Neon or Fly, the live database and the secret as they
-- were, the attacker's SQL not run.
local function refused(s, r, pattern, what)
  t.eq(r.code, 1, what .. ": " .. r.stderr)
  t.match(r.stderr, pattern, what)
  t.eq(env:writes(), {}, what .. ": nothing changed on Neon or Fly")
  t.eq(rows(s.db), "4\n", what .. ": the live database is as it was")
  t.eq(env:fly_state().secrets.DATABASE_URL, env:pooled_url(s.db), what .. ": the secret is as it was")
  t.eq(f.role_exists(MARKER), false, what .. ": the replaced archive's SQL did not run")
  env:check_spec()
end

t.test("a signed backup restores with --trust, and the run records the key", function()
  local s = app_database("trust_shop_ok", { "--sign", keys .. "/sign.key" })
  local r = neon_restore(s, { "--trust", PUB })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "signed by trusted key")
  t.match(r.stderr, "every block of [^\n]* matches its signed manifest")
  t.eq(rows(s.db), "3\n")
end)

t.test("a replaced object under an intact signed manifest is refused before anything changes", function()
  local s = app_database("trust_shop_swap", { "--sign", keys .. "/sign.key" })
  local size = #h.read(s.src)
  local hostile = f.hostile_archive(h.tmpdir(), "neon_trust_hostile_src", MARKER)
  local z = f.pad_zstd(f.zstd(hostile, hostile .. ".zst"), size)
  h.write(s.src, h.read(z))
  t.eq(#h.read(s.src), size, "same size as the signed one")
  refused(s, neon_restore(s, { "--trust", PUB }), "does not match what was recorded", "--trust")
  -- the same through --dry-run: the plan is not printed for a backup that is refused
  local r = neon_restore(s, { "--trust", PUB, "--dry-run" })
  t.eq(r.code, 1, r.stderr)
  t.eq(r.stdout, "", "no plan")
end)

t.test("--resume checks with the keys the run recorded: an object replaced after a failure is refused", function()
  local s = app_database("trust_shop_resume", { "--sign", keys .. "/sign.key" })
  env:neon_faults{ { method = "POST", path = "/databases$", action = { status = 500 } } }
  local r = neon_restore(s, { "--trust", PUB })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "step create failed")
  local size = #h.read(s.src)
  local hostile = f.hostile_archive(h.tmpdir(), "neon_trust_resume_src", MARKER)
  h.write(s.src, h.read(f.pad_zstd(f.zstd(hostile, hostile .. ".zst"), size)))
  env:control("neon", "clear")
  env:control("fly", "clear")
  refused(s, env:pgvault({ "neon-restore", "--resume" }, { cwd = s.dir, env = { PGVAULT_TRUST = false } }),
    "does not match what was recorded", "--resume without --trust")
end)

t.test("an unsigned backup is refused with --trust, PGVAULT_TRUST or the configuration's trust", function()
  local s = app_database("trust_shop_unsigned")
  refused(s, neon_restore(s, { "--trust", PUB }), "is not signed", "--trust")
  refused(s, neon_restore(s, nil, { env = { PGVAULT_TRUST = PUB } }), "is not signed", "PGVAULT_TRUST")
  h.write(s.dir .. "/pgvault.conf.lua", 'environment "prod" { trust = { "' .. PUB .. '" } }\n')
  refused(s, neon_restore(s, { "--env", "prod" }), "is not signed", "trust in the configuration")
end)

t.test("close the fakes", function() env:close() end)
