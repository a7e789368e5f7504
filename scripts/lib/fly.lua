-- Fly.io app secrets and their deployment, on the Machines API (flaps), as
-- flyctl does `fly secrets set` and `fly secrets deploy`:
--   local f = require("lib.fly").client{ app = "shop" }
--   local version = f:set_secrets{ DATABASE_URL = url }   -- staged
--   f:deploy(version)       -- each machine updated to min_secrets_version
-- The token is flyctl's: FLY_ACCESS_TOKEN, else FLY_API_TOKEN (a scheme the
-- user pasted in front is dropped); macaroon tokens (fm1r_, fm1a_, fm2_…)
-- go as "Authorization: FlyV1 …", others as "Bearer …". The API base is
-- FLY_FLAPS_BASE_URL (flyctl's name) or FLAPS_BASE_URL, default
-- https://api.machines.dev.
local http = require "pgvault.http"
local proc = require "pgvault.proc"
local pgvault = require "pgvault"

local fly = {}
fly.DEFAULT_BASE = "https://api.machines.dev"
fly.LEASE_TTL = 60
fly.WAIT_TIMEOUT = 60

local Client = {}
Client.__index = Client

-- The Authorization header for a token as a user may paste it: an optional
-- "Bearer "/"FlyV1 " scheme (even twice), comma-separated tokens.
function fly.authorization(token)
  token = token:gsub("^%s+", "") .. " "
  repeat
    local before = token
    token = token:gsub("^[Bb][Ee][Aa][Rr][Ee][Rr]%s+", ""):gsub("^[Ff][Ll][Yy][Vv]1%s+", "")
  until token == before
  local macaroons, others = {}, {}
  for tok in token:gmatch("[^,]+") do
    tok = tok:gsub("^%s+", ""):gsub("%s+$", "")
    local prefix = tok:match("^([^_]*)_")
    if prefix == "fm1r" or prefix == "fm1a" or prefix == "fm2" then
      macaroons[#macaroons + 1] = tok
    elseif tok ~= "" then
      others[#others + 1] = tok
    end
  end
  if #macaroons > 0 then return "FlyV1 " .. table.concat(macaroons, ",") end
  if #others == 0 then pgvault.raise("config", "the Fly.io token is empty") end
  return "Bearer " .. table.concat(others, ",")
end

-- opts: app (required), token, base_url (else the environment).
function fly.client(opts)
  local token = opts.token
  if not token or token == "" then token = os.getenv("FLY_ACCESS_TOKEN") end
  if not token or token == "" then token = os.getenv("FLY_API_TOKEN") end
  if not token or token == "" then
    pgvault.raise("config", string.format("no Fly.io token (set FLY_API_TOKEN to a deploy token, 'fly tokens "
      .. "create deploy -a %s', or fly_api_token in the configuration)", tostring(opts.app)))
  end
  if not opts.app or not opts.app:match("^[%w%-]+$") then
    pgvault.raise("usage", "a Fly.io app name is required (--fly-app)")
  end
  local base = opts.base_url or os.getenv("FLY_FLAPS_BASE_URL") or os.getenv("FLAPS_BASE_URL") or fly.DEFAULT_BASE
  if base == "" then base = fly.DEFAULT_BASE end
  local self = setmetatable({ app = opts.app }, Client)
  self.http = http.client{ base_url = base:gsub("/+$", "") .. "/v1/apps/" .. http.escape(opts.app), timeout = 90,
    max_attempts = 5, headers = { Authorization = fly.authorization(token) } }
  return self
end

function Client:close() self.http:close() end
Client.__close = Client.close

-- A request; a refusal the user can act on says what to check.
function Client:call(args)
  local ok, r = pcall(self.http.request, self.http, args)
  if ok then return r end
  if pgvault.is_error(r) and type(r.request_id) == "string" then
    r.message = r.message .. " (request id " .. r.request_id .. ")"
  end
  if pgvault.is_error(r) and (r.http_status == 401 or r.http_status == 403) then
    r.message = string.format("Fly.io refused the token (it must be allowed to deploy app %s, e.g. 'fly tokens "
      .. "create deploy -a %s'): %s", self.app, self.app, r.message)
  elseif pgvault.is_error(r) and r.http_status == 404 and args.path == "/secrets" then
    r.message = string.format("Fly.io has no app %s that this token can reach (check --fly-app): %s", self.app,
      r.message)
  end
  error(r, 0)
end

-- The app's secrets: { {name=, digest=, updated_at=}, ... } (no values).
function Client:secrets()
  return self:call{ method = "GET", path = "/secrets" }.json.secrets
end

-- Sets secrets (a value of false unsets one) without deploying them;
-- returns the new secrets version. Setting the same values twice does no
-- harm, so after a network error the app is looked at (is the API there?)
-- and the call is made once more.
function Client:set_secrets(values)
  local body = { values = {} }
  for k, v in pairs(values) do body.values[k] = v or require("cjson").null end
  for attempt = 1, 2 do
    local ok, r = pcall(self.call, self, { method = "POST", path = "/secrets", json = body })
    if ok then return math.tointeger(r.json.version) end
    if attempt == 2 or not (pgvault.is_error(r) and r.kind == "http" and r.http_status == nil) then error(r, 0) end
    log.warn("setting the Fly.io secrets: %s; checking the app, then setting them again", r.message)
    self:secrets()
  end
end

-- The app's machines that a deploy updates (flyctl's rule: active, on the
-- v2 platform, not a release-command or console machine).
function Client:machines()
  local out = {}
  for _, m in ipairs(self:call{ method = "GET", path = "/machines" }.json) do
    local md = type(m.config) == "table" and type(m.config.metadata) == "table" and m.config.metadata or {}
    local group = md.fly_process_group
    if m.state ~= "destroyed" and m.state ~= "destroying" and md.fly_platform_version == "v2"
      and group ~= "fly_app_release_command" and group ~= "fly_app_console"
      and md.process_group ~= "release_command" then
      out[#out + 1] = m
    end
  end
  return out
end

-- A lease on machine `id` (or, given `nonce`, that lease extended):
-- retried while someone else holds it (409), for up to `patience` seconds;
-- returns the nonce.
function Client:lease(id, patience, nonce)
  local deadline = proc.now() + (patience or 60)
  local pause = 0.2
  while true do
    local r = self:call{ method = "POST", path = "/machines/" .. http.escape(id) .. "/lease",
      query = { ttl = fly.LEASE_TTL }, retry = "never", ok = { 409 },
      headers = nonce and { ["fly-machine-lease-nonce"] = nonce } or nil }
    if r.status < 300 and r.json and r.json.status == "success" and r.json.data then return r.json.data.nonce end
    if proc.now() > deadline then
      pgvault.raise("http", string.format("machine %s of app %s is leased by someone else (a deploy running?): %s",
        id, self.app, r.json and (r.json.error or r.json.message) or ("status " .. r.status)))
    end
    log.info("machine %s is leased by someone else; waiting", id)
    proc.sleep(pause)
    pause = math.min(pause * 2, 5)
  end
end

function Client:release(id, nonce)
  local ok, err = pcall(self.call, self, { method = "DELETE", path = "/machines/" .. http.escape(id)
    .. "/lease", headers = { ["fly-machine-lease-nonce"] = nonce }, ok = { 404, 409 } })
  if not ok then log.warn("could not release the lease on machine %s (%s): it expires by itself", id, tostring(err)) end
end

-- Updates one machine (whose lease we hold) to see secrets version
-- `version`, as flyctl's restart-only deploy does: same config and region; a
-- machine that was not running is updated without being started.
function Client:update_machine(m, nonce, version)
  local path = "/machines/" .. http.escape(m.id)
  local cur = self:call{ method = "GET", path = path }.json
  local skip = not (cur.state == "started" or cur.state == "starting" or cur.state == "failed")
  self:call{ method = "POST", path = path, retry = "never", headers = { ["fly-machine-lease-nonce"] = nonce },
    json = { config = cur.config, region = cur.region, skip_launch = skip, min_secrets_version = version } }
  if not skip then
    self:call{ method = "GET", path = path .. "/wait", query = { state = "started",
      timeout = fly.WAIT_TIMEOUT }, timeout = fly.WAIT_TIMEOUT + 30 }
  end
  log.info("machine %s (%s) now uses secrets version %d%s", m.id, tostring(cur.region), version,
    skip and " (not running: it picks them up when it starts)" or "")
end

-- Deploys secrets version `version` to every machine, as flyctl does: the
-- leases of all machines first (so a machine held by someone else stops
-- the deploy before any machine changed), then one machine after the
-- other (its lease extended first), every lease released at the end.
-- Returns the number of machines (0: the secrets stay staged).
function Client:deploy(version, patience)
  local machines = self:machines()
  local leases = {}
  local ok, err = pcall(function()
    for _, m in ipairs(machines) do leases[#leases + 1] = { m = m, nonce = self:lease(m.id, patience) } end
    for _, l in ipairs(leases) do
      l.nonce = self:lease(l.m.id, patience, l.nonce)
      self:update_machine(l.m, l.nonce, version)
    end
  end)
  for _, l in ipairs(leases) do self:release(l.m.id, l.nonce) end
  if not ok then error(err, 0) end
  return #machines
end

return fly
