-- covers: tests/harness/
-- The fakes neon-restore is tested against must themselves behave as the
-- real services do: the fake Neon checks requests and its own responses
-- against the pinned OpenAPI spec, locks changes while an operation runs and
-- changes real databases; its "-pooler" host is a real PgBouncer in
-- transaction mode; the fake Fly records secrets and honours leases.
local cjson = require "cjson"
local t = require "harness.testing"
local h = require "harness.env"
local saas = require "harness.saas"

local function curl(method, url, headers, body)
  local argv = { "curl", "-sS", "-X", method, "-o", "-", "-w", "\n%{http_code}", url }
  for k, v in pairs(headers or {}) do
    argv[#argv + 1] = "-H"
    argv[#argv + 1] = k .. ": " .. v
  end
  if body then
    argv[#argv + 1] = "-H"
    argv[#argv + 1] = "content-type: application/json"
    argv[#argv + 1] = "--data-binary"
    argv[#argv + 1] = cjson.encode(body)
  end
  local r = h.run(argv, { timeout = 60 })
  assert(r.code == 0, r.stderr)
  local text, status = r.stdout:match("^(.*)\n(%d+)$")
  return tonumber(status), text ~= "" and cjson.decode(text) or nil
end

local env = saas.start{ operation_step_ms = 300 }

local function fresh(databases)
  local list = {}
  for i, d in ipairs(databases or {}) do list[i] = { name = d, owner = h.pg().user } end
  env:control("neon", "reset", { databases = list })
  env:control("fly", "reset", { machines = { { id = "m1", state = "started" } } })
end

local function neon(method, path, body)
  return curl(method, env.neon_url .. "/api/v2/projects/" .. env.project .. path,
    { Authorization = "Bearer " .. env.neon_key }, body)
end

t.test("fake neon: requests that break the spec are refused and recorded", function()
  h.createdb("fakes_a")
  fresh{ "fakes_a" }
  local status = neon("POST", "/branches/" .. env.branch .. "/databases", { database = { nam = "x" } })
  t.eq(status, 400, "a body without the required name")
  t.raises(function() env:check_spec() end, "createProjectBranchDatabase")
end)

t.test("fake neon: a response that breaks the spec is caught", function()
  fresh()
  env:neon_faults{ { method = "GET", path = "/branches$", action = "corrupt_response" } }
  local status = neon("GET", "/branches")
  t.eq(status, 200)
  t.raises(function() env:check_spec() end, "response")
end)

t.test("fake neon: changes are operations on real databases; 423 while one runs", function()
  fresh()
  h.dropdb("fakes_new")
  local status, body = neon("POST", "/branches/" .. env.branch .. "/databases",
    { database = { name = "fakes_new", owner_name = env.pg.user } })
  t.eq(status, 201)
  t.eq(body.operations[1].status, "scheduling")
  local s2, b2 = neon("POST", "/branches/" .. env.branch .. "/databases",
    { database = { name = "fakes_other", owner_name = env.pg.user } })
  t.eq(s2, 423, "locked while the first operation runs")
  t.ok(b2.request_id and b2.code and b2.message, "errors are {code, message, request_id}")
  env:control("neon", "settle")
  local _, op = neon("GET", "/operations/" .. body.operations[1].id)
  t.eq(op.operation.status, "finished")
  t.eq(h.psql(h.pg().admin_url("postgres"), "SELECT count(*) FROM pg_database WHERE datname = 'fakes_new'"), "1\n")
  local s3, b3 = neon("GET", "/connection_uri?database_name=fakes_new&role_name=" .. env.pg.user .. "&pooled=true")
  t.eq(s3, 200)
  t.match(b3.uri, "@" .. env.pooler_host:gsub("%-", "%%-") .. ":")
  env:check_spec()
  h.dropdb("fakes_new")
end)

t.test("fake neon: an injected failed operation leaves the database as it was", function()
  h.createdb("fakes_b")
  fresh{ "fakes_b" }
  env:neon_faults{ { method = "PATCH", action = "op_failed" } }
  local status, body = neon("PATCH", "/branches/" .. env.branch .. "/databases/fakes_b",
    { database = { name = "fakes_c" } })
  t.eq(status, 200)
  env:control("neon", "settle")
  local _, op = neon("GET", "/operations/" .. body.operations[1].id)
  t.eq(op.operation.status, "failed")
  t.eq(neon("GET", "/branches/" .. env.branch .. "/databases/fakes_b"), 200)
  env:check_spec()
end)

t.test("the pooled host is PgBouncer in transaction mode; the direct host is the server", function()
  h.createdb("fakes_pool")
  fresh{ "fakes_pool" }
  local pg = h.pg()
  local function in_ns(argv)
    local full = { "unshare", "-m", "sh", "-c", 'mount --bind "$1" /etc/hosts && shift && exec "$@"', "sh", env.hosts }
    for _, a in ipairs(argv) do full[#full + 1] = a end
    return h.run(full, { env = { PGPASSWORD = pg.password } })
  end
  local direct = string.format("postgresql://%s@%s:%d/fakes_pool?sslmode=disable", pg.user, env.host, pg.port)
  local pooled = string.format("postgresql://%s@%s:%d/fakes_pool?sslmode=disable", pg.user, env.pooler_host, pg.port)
  local r = in_ns({ pg.bindir .. "/psql", "-X", "-At", "-d", direct, "-c", "SELECT inet_server_addr()" })
  t.eq(r.stdout, "127.0.0.1\n", "the direct host is the server itself")
  r = in_ns({ pg.bindir .. "/psql", "-X", "-At", "-d", pooled, "-c", "SELECT inet_server_addr()" })
  t.eq(r.stdout, "127.0.0.1\n", "the pooled host reaches the same server")
  t.match(h.read(env.bouncer.log), "login attempt: db=fakes_pool user=" .. pg.user, "it went through PgBouncer")
  t.match(h.read(env.bouncer.ini), "pool_mode = transaction")
  env:check_spec()
end)

t.test("fake fly: secrets get versions, leases conflict, updates need the nonce", function()
  fresh()
  local base = env.fly_url .. "/v1/apps/" .. env.app
  local auth = { Authorization = "FlyV1 " .. env.fly_token }
  t.eq(curl("GET", base .. "/machines", { Authorization = "Bearer " .. env.fly_token }), 401,
    "a macaroon token must go as FlyV1")
  local v0 = env:fly_state().version
  local s, b = curl("POST", base .. "/secrets", auth, { values = { DATABASE_URL = "postgresql://x" } })
  t.eq(s, 200)
  t.eq(b.version, v0 + 1, "a new secrets version")
  local v = b.version
  s, b = curl("POST", base .. "/machines/m1/lease?ttl=30", auth)
  t.eq(s, 200)
  local nonce = b.data.nonce
  t.eq(curl("POST", base .. "/machines/m1/lease?ttl=30", auth), 409, "held by us, asked without the nonce")
  t.eq(curl("POST", base .. "/machines/m1", auth, { config = { image = "x" }, min_secrets_version = v }), 412)
  local a2 = { Authorization = auth.Authorization, ["fly-machine-lease-nonce"] = nonce }
  t.eq(curl("POST", base .. "/machines/m1", a2, { config = { image = "x" }, min_secrets_version = v }), 200)
  t.eq(curl("GET", base .. "/machines/m1/wait?state=started&timeout=60", auth), 200)
  t.eq(curl("DELETE", base .. "/machines/m1/lease", a2), 200)
  local st = env:fly_state()
  t.eq(st.machines[1].seen_secrets.DATABASE_URL, "postgresql://x")
  t.eq(st.machines[1].updates[1].min_secrets_version, v)
  t.eq(st.machines[1].lease, cjson.null)
end)

t.test("close the fakes", function() env:close() end)
