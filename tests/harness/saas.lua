-- The fake Neon and Fly.io of the neon-restore tests, per test file:
--   local env = saas.start{ databases = { "shop" }, machines = { ... } }
-- starts tests/harness/fake_neon.js (validating against the pinned OpenAPI
-- spec), tests/harness/fake_fly.js and a PgBouncer for the "-pooler" host,
-- and stops them all when `env` is closed or collected (at the latest when
-- the test process ends; they die with it even when it is killed).
-- env:pgvault(args, opts) runs bin/pgvault against them: in a private mount
-- namespace whose /etc/hosts names the fake endpoint hosts (direct:
-- 127.0.0.1, pooler: PgBouncer's own loopback address), with NEON_API_KEY/NEON_API_HOST and
-- FLY_API_TOKEN/FLAPS_BASE_URL pointing at the fakes.
local cjson = require "cjson"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local h = require "harness.env"
local pgbouncer = require "harness.pgbouncer"

local saas = {}
local Env = {}
Env.__index = Env

local function spawn_fake(script, cfg, dir)
  local path = dir .. "/" .. script .. ".json"
  fs.write_file(path, cjson.encode(cfg), { mode = 384 })
  -- setpriv --pdeathsig: the fake dies with the test process, even a killed one.
  local handle = proc.spawn({ "setpriv", "--pdeathsig", "KILL", "node", h.root .. "/tests/harness/" .. script .. ".js",
    path,
    env = { NODE_PATH = h.root .. "/node_modules" }, stdout = "pipe", stderr = "inherit" })
  local line = handle:read_line(60)
  local port = line and line:match("^ready (%d+)")
  if not port then
    handle:close()
    error(script .. " did not start (" .. tostring(line) .. "): run 'make deps' for its npm packages", 3)
  end
  return handle, "http://127.0.0.1:" .. port
end

-- opts: databases = { "shop", ... } (existing real databases, owned by the
-- test role), machines = { { id =, state = "started"|"stopped" }, ... },
-- secrets = { DATABASE_URL = ... }, fly_token, neon_key, uri_params,
-- operation_step_ms.
function saas.start(opts)
  opts = opts or {}
  local pg = h.pg()
  local dir = h.tmpdir()
  local self = setmetatable({ dir = dir, handles = {}, pg = pg }, Env)
  local ok, err = pcall(function()
    self.project = "fake-project-123456"
    self.branch = "br-main-123456"
    self.endpoint = "ep-main-123456"
    self.host_suffix = "us-east-2.aws.neon.tech"
    self.host = self.endpoint .. "." .. self.host_suffix
    self.pooler_host = self.endpoint .. "-pooler." .. self.host_suffix
    self.neon_key = opts.neon_key or "neon-test-key-0123456789"
    self.fly_token = opts.fly_token or "fm2_lJPECAAAAAAAfaketokenpart,fm2_second"
    self.app = "shop-app"
    self.bouncer = pgbouncer.start()
    local dbs = {}
    for _, d in ipairs(opts.databases or {}) do dbs[#dbs + 1] = { name = d, owner = pg.user } end
    self.neon, self.neon_url = spawn_fake("fake_neon", {
      api_key = self.neon_key, project_id = self.project, host_suffix = self.host_suffix,
      region_id = "aws-us-east-2", operation_step_ms = opts.operation_step_ms or 30,
      branches = {
        { id = self.branch, name = "main", default = true, endpoint = self.endpoint },
        { id = "br-dev-654321", name = "dev", default = false, endpoint = "ep-dev-654321" },
      },
      roles = { { name = pg.user, password = pg.password } },
      databases = dbs, uri_params = opts.uri_params or "sslmode=disable",
      pg = { port = pg.port, socket_dir = pg.socket_dir, bindir = pg.bindir },
    }, dir)
    self.handles[#self.handles + 1] = self.neon
    self.fly, self.fly_url = spawn_fake("fake_fly", {
      app = self.app, token = self.fly_token, secrets = opts.secrets or {},
      machines = opts.machines or { { id = "m1", state = "started" }, { id = "m2", state = "stopped" } },
    }, dir)
    self.handles[#self.handles + 1] = self.fly
    self.hosts = dir .. "/hosts"
    h.write(self.hosts, table.concat({ "127.0.0.1 localhost",
      "127.0.0.1 " .. self.host, self.bouncer.addr .. " " .. self.pooler_host,
      "127.0.0.1 ep-dev-654321." .. self.host_suffix, "" }, "\n"))
  end)
  if not ok then
    self:close()
    error(err, 2)
  end
  return self
end

function Env:close()
  if self.closed then return end
  self.closed = true
  for i = #self.handles, 1, -1 do self.handles[i]:close() end
  if self.bouncer then self.bouncer.stop() end
end
Env.__close = Env.close
Env.__gc = Env.close

function Env:control(which, what, body)
  local base = which == "neon" and self.neon_url or self.fly_url
  local argv = { "curl", "-sS", "--fail-with-body", "-X", body and "POST" or "GET", "--data-binary", "@-",
    base .. "/_control/" .. what }
  local r = h.run(argv, { stdin = body and cjson.encode(body) or "", timeout = 60 })
  if r.code ~= 0 then error(which .. " control " .. what .. " failed: " .. r.stderr .. r.stdout, 2) end
  return cjson.decode(r.stdout)
end

-- (An empty Lua table encodes as {}: the fakes read that as an empty list.)
-- Fault rules for the next run (see tests/harness/saas.js).
function Env:neon_faults(rules) return self:control("neon", "faults", rules) end
function Env:fly_faults(rules) return self:control("fly", "faults", rules) end
function Env:neon_calls() return self:control("neon", "calls") end
function Env:fly_calls() return self:control("fly", "calls") end
function Env:neon_state() return self:control("neon", "state") end
function Env:fly_state() return self:control("fly", "state") end

-- Raises when a request or a response broke the pinned OpenAPI spec.
function Env:check_spec()
  local v = self:control("neon", "violations")
  if #v > 0 then error("the Neon API spec was broken: " .. cjson.encode(v), 2) end
end

-- Every call that may change something (not GET) on either fake.
function Env:writes()
  local out = {}
  for _, which in ipairs({ "neon", "fly" }) do
    for _, c in ipairs(self:control(which, "calls")) do
      if c.method ~= "GET" then out[#out + 1] = which .. " " .. c.method .. " " .. c.path end
    end
  end
  return out
end

function Env:env(extra)
  local e = {
    NEON_API_KEY = self.neon_key, NEON_API_HOST = self.neon_url .. "/api/v2",
    FLY_API_TOKEN = self.fly_token, FLY_ACCESS_TOKEN = false, FLAPS_BASE_URL = self.fly_url,
    FLY_FLAPS_BASE_URL = false, PGVAULT_CONFIG = false,
  }
  for k, v in pairs(h.s3().env) do e[k] = v end
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

-- Runs pgvault with args against the fakes (opts as harness.env's run;
-- opts.env entries override).
function Env:pgvault(args, opts)
  opts = opts or {}
  local argv = { "unshare", "-m", "sh", "-c", 'mount --bind "$1" /etc/hosts && shift && exec "$@"', "sh",
    self.hosts }
  if h.valgrind then
    for _, a in ipairs({ "valgrind", "-q", "--error-exitcode=99", "--leak-check=full",
      "--errors-for-leak-kinds=definite", "--suppressions=" .. h.root .. "/tests/valgrind.supp" }) do
      argv[#argv + 1] = a
    end
  end
  argv[#argv + 1] = h.bin
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return h.run(argv, { env = self:env(opts.env), cwd = opts.cwd, stdin = opts.stdin,
    timeout = (opts.timeout or 300) * (h.valgrind and 10 or 1) })
end

-- The URLs the fake Neon hands out for database `db`.
function Env:direct_url(db)
  return string.format("postgresql://%s:%s@%s:%d/%s?sslmode=disable", self.pg.user, self.pg.password, self.host,
    self.pg.port, db)
end
function Env:pooled_url(db)
  return string.format("postgresql://%s:%s@%s:%d/%s?sslmode=disable", self.pg.user, self.pg.password,
    self.pooler_host, self.pg.port, db)
end


-- A fresh application database `db` with 3 customers, backed up (3 rows in
-- the manifest), then changed (a 4th customer) as production goes on; the
-- fakes reset to know it (Fly: DATABASE_URL = its pooled URL, OTHER = "x",
-- opts.machines or a started m1 and a stopped m2). Returns { db, dir, src }.
function Env:app_database(db, opts)
  opts = opts or {}
  local pg = self.pg
  h.createdb(db)
  h.psql(pg.url(db), "CREATE TABLE customers(id int PRIMARY KEY, name text);"
    .. "INSERT INTO customers SELECT i, 'c' || i FROM generate_series(1, 3) i;")
  local dir = h.tmpdir()
  local b = h.pgvault({ "backup", "--db", pg.url(db), "--to", dir .. "/backups" })
  if b.code ~= 0 then error("backup of " .. db .. " failed: " .. b.stderr, 2) end
  h.psql(pg.url(db), "INSERT INTO customers VALUES (4, 'after the backup');")
  self:control("neon", "reset", { databases = { { name = db, owner = pg.user } } })
  self:control("fly", "reset", { secrets = { DATABASE_URL = self:pooled_url(db), OTHER = "x" },
    machines = opts.machines or { { id = "m1", state = "started" }, { id = "m2", state = "stopped" } } })
  return { db = db, dir = dir, src = b.stdout:match("([^\n]+)\n?$") }
end

return saas
