-- Starts tests/harness/s3proxy.js in front of the suite's S3 server and
-- drives it: fault rules, statistics and the multipart-upload accounting.
-- The proxy stops when the returned object is closed or collected.
local cjson = require "cjson"
local proc = require "pgvault.proc"
local h = require "harness.env"

local s3proxy = {}
local Proxy = {}
Proxy.__index = Proxy

-- opts.tls = { cert = PATH, key = PATH, ca = PATH } serves HTTPS.
function s3proxy.start(opts)
  opts = opts or {}
  local s3 = h.s3()
  local env = {}
  if opts.tls then env.TLS_CERT, env.TLS_KEY = opts.tls.cert, opts.tls.key end
  local handle = proc.spawn({ "node", h.root .. "/tests/harness/s3proxy.js", s3.endpoint, env = env,
    stdout = "pipe", stderr = "inherit" })
  local line = handle:read_line(30)
  local port = line and line:match("^ready (%d+)")
  if not port then
    handle:close()
    error("the S3 proxy did not start: " .. tostring(line), 2)
  end
  local scheme = opts.tls and "https" or "http"
  local self = setmetatable({ handle = handle, port = tonumber(port), ca = opts.tls and opts.tls.ca,
    endpoint = scheme .. "://127.0.0.1:" .. port }, Proxy)
  return self
end

function Proxy:control(path, body)
  local argv = { "curl", "-sS", "--fail", "-X", body and "POST" or "GET", "--data-binary", "@-",
    self.endpoint .. "/__proxy/" .. path }
  if self.ca then table.insert(argv, 2, "--cacert") table.insert(argv, 3, self.ca) end
  local r = h.run(argv, { stdin = body or "", timeout = 30 })
  if r.code ~= 0 then error("proxy control " .. path .. " failed: " .. r.stderr, 2) end
  return cjson.decode(r.stdout)
end

-- rules: list of {op = "UploadPart"|"*", action = "status503"|"status500"|
-- "reset"|"slow", rate = 0..1, after = N, count = N, except = {ops}, ms = N}
function Proxy:rules(list)
  return self:control("rules", #list == 0 and "[]" or cjson.encode(list))
end

function Proxy:stats() return self:control("stats") end
function Proxy:reset() return self:control("reset", "{}") end

-- Uploads in a given state ("open", "completed", "aborted").
function Proxy:uploads(state)
  local out = {}
  for _, u in ipairs(self:stats().uploads) do
    if not state or u.state == state then out[#out + 1] = u end
  end
  return out
end

-- Environment for a pgvault child that talks to the proxy.
function Proxy:env(extra)
  local env = {}
  for k, v in pairs(h.s3().env) do env[k] = v end
  env.AWS_ENDPOINT_URL = self.endpoint
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

-- Options for an in-process client that talks to the proxy.
function Proxy:opts(extra)
  local s3 = h.s3()
  local o = { endpoint_url = self.endpoint, region = s3.region, access_key_id = s3.access_key,
    secret_access_key = s3.secret_key, ca_bundle = self.ca }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

function Proxy:close()
  if self.handle then self.handle:close() end
  self.handle = nil
end

Proxy.__close = Proxy.close
Proxy.__gc = Proxy.close

return s3proxy
