-- Starts tests/harness/httpserver.js (a scriptable HTTP or HTTPS server)
-- and drives it: routes with their programmed answers, and the requests it
-- received. The server stops when the returned object is closed or collected.
local cjson = require "cjson"
local proc = require "pgvault.proc"
local h = require "harness.env"

local httpserver = {}
local Server = {}
Server.__index = Server

-- opts.tls = { cert = PATH, key = PATH, ca = PATH } serves HTTPS.
function httpserver.start(opts)
  opts = opts or {}
  local env = {}
  if opts.tls then env.TLS_CERT, env.TLS_KEY = opts.tls.cert, opts.tls.key end
  local handle = proc.spawn({ "node", h.root .. "/tests/harness/httpserver.js", env = env, stdout = "pipe",
    stderr = "inherit" })
  local line = handle:read_line(30)
  local port = line and line:match("^ready (%d+)")
  if not port then
    handle:close()
    error("the HTTP test server did not start: " .. tostring(line), 2)
  end
  local scheme = opts.tls and "https" or "http"
  return setmetatable({ handle = handle, port = tonumber(port), ca = opts.tls and opts.tls.ca,
    base = scheme .. "://127.0.0.1:" .. port }, Server)
end

-- The server's URL for `path`.
function Server:url(path) return self.base .. (path or "") end

function Server:control(path, body)
  local argv = { "curl", "-sS", "--fail", "-X", body and "POST" or "GET", "--data-binary", "@-",
    self.base .. "/__control/" .. path }
  if self.ca then table.insert(argv, 2, "--cacert") table.insert(argv, 3, self.ca) end
  local r = h.run(argv, { stdin = body or "", timeout = 30 })
  if r.code ~= 0 then error("HTTP server control " .. path .. " failed: " .. r.stderr, 2) end
  return cjson.decode(r.stdout)
end

-- routes: { {method =, path =, responses = { {status =, headers =, body =|json =,
-- delay_ms =, action = "reset"|"hang"}, ... } }, ... }
function Server:routes(list)
  return self:control("routes", #list == 0 and "[]" or cjson.encode(list))
end

-- Every request received since the last reset: {method, url, path, headers, body}.
function Server:requests() return self:control("requests") end
function Server:reset() return self:control("reset", "{}") end

function Server:close()
  if self.handle then self.handle:close() end
  self.handle = nil
end

Server.__close = Server.close
Server.__gc = Server.close

-- A self-signed CA and a certificate for 127.0.0.1 signed by it, in dir:
-- returns { ca =, cert =, key = } paths.
function httpserver.make_tls(dir)
  local function openssl(args)
    local argv = { "openssl" }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local r = h.run(argv)
    if r.code ~= 0 then error("openssl " .. args[1] .. " failed: " .. r.stderr, 2) end
  end
  openssl({ "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", dir .. "/ca.key", "-out",
    dir .. "/ca.pem", "-days", "2", "-subj", "/CN=pgvault test CA" })
  openssl({ "req", "-newkey", "rsa:2048", "-nodes", "-keyout", dir .. "/server.key", "-out", dir .. "/server.csr",
    "-subj", "/CN=127.0.0.1" })
  h.write(dir .. "/ext.cnf", "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
  openssl({ "x509", "-req", "-in", dir .. "/server.csr", "-CA", dir .. "/ca.pem", "-CAkey", dir .. "/ca.key",
    "-CAcreateserial", "-out", dir .. "/server.pem", "-days", "2", "-extfile", dir .. "/ext.cnf" })
  return { ca = dir .. "/ca.pem", cert = dir .. "/server.pem", key = dir .. "/server.key" }
end

return httpserver
