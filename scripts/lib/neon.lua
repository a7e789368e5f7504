-- The Neon API v2 as neon-restore uses it (projects, branches, endpoints,
-- databases, roles, connection URIs, operations), on pgvault.http:
--   local n = require("lib.neon").client{ project = "shiny-wind-028834" }
-- The key and host are taken as neonctl takes them: NEON_API_KEY, and
-- NEON_API_HOST (default https://console.neon.tech/api/v2). Calls are
-- paced under Neon's limit (700 a minute, bursts of 40). Changes come back
-- with operations, which are polled until they finish. A change refused
-- with 423 Locked (another operation runs) or 503 is sent again after a
-- pause; after a network error it is never sent again blindly: the caller's
-- look() says whether the change was made after all.
local http = require "pgvault.http"
local proc = require "pgvault.proc"
local pgvault = require "pgvault"

local neon = {}
neon.DEFAULT_HOST = "https://console.neon.tech/api/v2"
neon.RATE_PER_MINUTE, neon.BURST = 700, 40

local Client = {}
Client.__index = Client

local DONE = { finished = true, skipped = true }
local FAILED = { failed = true, error = true, cancelled = true }

-- opts: project (required), api_key, api_host (else the environment),
-- poll_interval (seconds, default 0.5), operation_timeout (default 1200 s).
function neon.client(opts)
  local key = opts.api_key or os.getenv("NEON_API_KEY")
  if not key or key == "" then
    pgvault.raise("config", "no Neon API key: set NEON_API_KEY (Neon Console, Account settings, API keys) or "
      .. "neon_api_key in the configuration")
  end
  key = key:gsub("^%s*[Bb]earer%s+", ""):gsub("%s+$", "")
  local host = opts.api_host or os.getenv("NEON_API_HOST") or neon.DEFAULT_HOST
  host = host:gsub("/+$", "")
  if not opts.project or not opts.project:match("^[a-z0-9-]+$") then
    pgvault.raise("usage", "a Neon project id is required (--project ID, as in the Console's Settings page)")
  end
  local self = setmetatable({ project = opts.project, host = host, tokens = neon.BURST, last = proc.now(),
    poll = opts.poll_interval or 0.5, op_timeout = opts.operation_timeout or 1200, calls = {} }, Client)
  self.http = http.client{ base_url = host, timeout = opts.timeout or 60, max_attempts = 6,
    headers = { Authorization = "Bearer " .. key, Accept = "application/json" } }
  return self
end

function Client:close() self.http:close() end
Client.__close = Client.close

-- Waits as long as needed to stay under the rate limit (a token bucket).
function Client:pace()
  local now = proc.now()
  self.tokens = math.min(neon.BURST, self.tokens + (now - self.last) * neon.RATE_PER_MINUTE / 60)
  self.last = now
  if self.tokens < 1 then
    proc.sleep((1 - self.tokens) * 60 / neon.RATE_PER_MINUTE)
    self.tokens, self.last = 1, proc.now()
  end
  self.tokens = self.tokens - 1
end

function Client:path(fmt, ...)
  local parts = { ... }
  for i, p in ipairs(parts) do parts[i] = http.escape(tostring(p)) end
  return "/projects/" .. http.escape(self.project) .. string.format(fmt, table.unpack(parts))
end

-- An error of the API with its request id (for Neon's support), and what
-- to check when Neon refused the key.
function Client:explain(err)
  if not pgvault.is_error(err) or err.explained then return err end
  err.explained = true
  local rid = err.request_id or (type(err.json) == "table" and err.json.request_id)
  if type(rid) == "string" and rid ~= "" then err.message = err.message .. " (request id " .. rid .. ")" end
  if err.http_status == 401 or err.http_status == 403 then
    err.message = string.format("Neon refused the API key (check NEON_API_KEY, or neon_api_key in the "
      .. "configuration; it must reach project %s): %s", self.project, err.message)
  end
  return err
end

-- GET; returns the decoded answer, or nil for a status listed in `ok`.
function Client:get(path, query, ok)
  self:pace()
  local okcall, r = pcall(self.http.request, self.http, { method = "GET", path = path, query = query, ok = ok })
  if not okcall then error(self:explain(r), 0) end
  if r.status >= 300 then return nil, r.status end
  return r.json
end

-- The write protocol: returns the decoded answer. look() -> answer or nil
-- tells after a network error whether the change was made.
function Client:write(method, path, body, look, what)
  local pause = 0.5
  for attempt = 1, 12 do
    self:pace()
    local okcall, r = pcall(self.http.request, self.http, { method = method, path = path, json = body,
      retry = "never", ok = { 423, 429, 503 } })
    if okcall and r.status < 300 then
      return r.json
    elseif okcall then
      -- the server's own Retry-After (seconds) when it gives one, within reason
      local after = tonumber(r.headers and r.headers["retry-after"] or "")
      if after and after >= 0 and after <= 60 then pause = math.max(pause, after) end
      log.info("Neon answered %d to %s (%s): trying again in %.1f s", r.status, what,
        r.status == 423 and "another operation is running" or "busy", pause)
    elseif pgvault.is_error(r) and r.kind == "http" and r.http_status == nil then
      log.warn("%s: %s; looking whether Neon made the change before trying again", what, r.message)
      self:settle()
      local done = look and look()
      if done then return done end
    else
      error(self:explain(r), 0)
    end
    if attempt == 12 then break end
    proc.sleep(pause)
    pause = math.min(pause * 2, 10)
  end
  pgvault.raise("http", what .. ": Neon kept refusing it (locked or busy); run the command again later")
end

-- Polls each operation until it ends; raises when one failed.
function Client:wait(operations, what)
  local deadline = proc.now() + self.op_timeout
  for _, op in ipairs(operations or {}) do
    local status, err = op.status, op.error
    local pause = math.min(self.poll, 0.2)
    while not DONE[status] do
      if FAILED[status] then
        pgvault.raise("http", string.format("%s: Neon operation %s (%s) ended %s%s", what, op.id,
          tostring(op.action), status, err and (": " .. err) or ""))
      end
      if proc.now() > deadline then
        pgvault.raise("http", string.format("%s: Neon operation %s is still %s after %d s; check the project's "
          .. "Monitoring page", what, op.id, status, self.op_timeout))
      end
      proc.sleep(pause)
      pause = math.min(pause * 1.5, self.poll * 4)
      local r = self:get(self:path("/operations/%s", op.id))
      status, err = r.operation.status, r.operation.error
    end
  end
end

-- Waits until no operation of the project is running.
function Client:settle()
  local r = self:get(self:path("/operations"), { limit = 20 })
  local running = {}
  for _, op in ipairs(r.operations or {}) do
    if not DONE[op.status] and not FAILED[op.status] then running[#running + 1] = op end
  end
  if #running > 0 then pcall(self.wait, self, running, "waiting for running operations") end
end

-- The branch named or with id `want` (default: the project's default branch).
function Client:branch(want)
  local ok, r = pcall(self.get, self, self:path("/branches"))
  if not ok and pgvault.is_error(r) and r.http_status == 404 then
    r.message = string.format("Neon has no project %s that this API key can reach (check --project): %s", self.project,
      r.message)
  end
  if not ok then error(r, 0) end
  for _, b in ipairs(r.branches) do
    if (want and (b.id == want or b.name == want)) or (not want and b.default) then return b end
  end
  local names = {}
  for _, b in ipairs(r.branches) do names[#names + 1] = b.name end
  pgvault.raise("usage", want and string.format("Neon project %s has no branch %s (it has: %s): check --branch",
    self.project, want, table.concat(names, ", "))
    or string.format("Neon project %s has no default branch: name one with --branch", self.project))
end

-- The branch's read-write endpoint.
function Client:endpoint(branch_id)
  local r = self:get(self:path("/branches/%s/endpoints", branch_id))
  for _, e in ipairs(r.endpoints) do
    if e.type == "read_write" then return e end
  end
  pgvault.raise("usage", string.format("branch %s has no read-write compute endpoint: add one in the Neon Console",
    branch_id))
end

function Client:databases(branch_id)
  return self:get(self:path("/branches/%s/databases", branch_id)).databases
end

-- The database, or nil when there is none of that name.
function Client:database(branch_id, name)
  local r = self:get(self:path("/branches/%s/databases/%s", branch_id, name), nil, { 404 })
  return r and r.database or nil
end

function Client:create_database(branch_id, name, owner)
  local what = string.format("creating database %s", name)
  local r = self:write("POST", self:path("/branches/%s/databases", branch_id),
    { database = { name = name, owner_name = owner } }, function()
      local d = self:database(branch_id, name)
      return d and { database = d, operations = {} }
    end, what)
  self:wait(r.operations, what)
  return r.database
end

function Client:rename_database(branch_id, from, to)
  local what = string.format("renaming database %s to %s", from, to)
  local r = self:write("PATCH", self:path("/branches/%s/databases/%s", branch_id, from), { database = { name = to } },
    function()
      local d = self:database(branch_id, to)
      return d and not self:database(branch_id, from) and { database = d, operations = {} }
    end, what)
  self:wait(r.operations, what)
  return r.database
end

-- Deletes the database; true when it existed.
function Client:delete_database(branch_id, name)
  local what = string.format("deleting database %s", name)
  local path = self:path("/branches/%s/databases/%s", branch_id, name)
  local r = self:write("DELETE", path, nil, function()
    return not self:database(branch_id, name) and { operations = {} }
  end, what)
  if r then self:wait(r.operations, what) end
  return r ~= nil
end

-- The connection URI (password included) of database `db` as `role`.
function Client:connection_uri(branch_id, endpoint_id, db, role, pooled)
  return self:get(self:path("/connection_uri"), { branch_id = branch_id, endpoint_id = endpoint_id,
    database_name = db, role_name = role, pooled = pooled and "true" or "false" }).uri
end

-- The pooled form of a host: "-pooler" after the endpoint id in the first
-- DNS label (ep-cool-123.us-east-2.aws.neon.tech -> ep-cool-123-pooler.…).
function neon.pooled_host(host)
  local first, rest = host:match("^([^.]+)(.*)$")
  if not first or first:match("%-pooler$") then return host end
  return first .. "-pooler" .. rest
end

-- The URL with its password replaced by "****", for messages and files.
function neon.redact(url)
  return (url:gsub("^(%w+://[^:/@]*):[^@]*@", "%1:****@"))
end

-- Registers the URL's password (as written and percent-decoded) with the
-- log's redaction; returns the redacted URL.
function neon.protect(url)
  local pw = url:match("^%w+://[^:/@]*:([^@]*)@")
  if pw and pw ~= "" then
    log.secret(pw)
    local plain = pw:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
    if plain ~= pw then log.secret(plain) end
  end
  return neon.redact(url)
end

return neon
