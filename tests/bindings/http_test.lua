-- covers: bindings/http.c bindings/http/
-- pgvault.http against tests/harness/httpserver.js: JSON in and out, query
-- strings, default and per-request headers, the retry rules (idempotent
-- methods on failures and 5xx; POST/PATCH only on answers that say the
-- request was not processed, never after a network error), Retry-After in
-- both forms, timeouts, TLS with a private CA, redirects refused, answer
-- size limit, errors with status, request id and the server's message, and
-- secrets (headers, URL tokens, secret paths) kept out of errors and logs.
local t = require "harness.testing"
local h = require "harness.env"
local children = require "harness.children"
local httpserver = require "harness.httpserver"
local http = require "pgvault.http"
local pgvault = require "pgvault"
local proc = require "pgvault.proc"

local S = httpserver.start()
local function fresh()
  S:reset()
  return S
end

local function client(extra)
  local o = { base_url = S:url("/api/v2"), retry_base_ms = 10, timeout = 10 }
  for k, v in pairs(extra or {}) do o[k] = v end
  return http.client(o)
end

-- A port where nothing listens: bind one, note it, close it.
local function dead_port()
  local tmp = httpserver.start()
  local port = tmp.port
  tmp:close()
  return port
end

-- Runs a Lua chunk in a pgvault child (-v: debug logging on); returns the result.
local function child(code, env)
  local d = h.tmpdir()
  h.write(d .. "/c.lua", code)
  return h.pgvault({ "-v", "run", d .. "/c.lua" }, { env = env, timeout = 60 })
end

t.test("GET: query sorted and encoded, default and request headers sent, JSON answer decoded", function()
  local s = fresh()
  s:routes({ { method = "GET", path = "/api/v2/projects/p1", responses = {
    { status = 200, json = { project = { id = "p1", n = 3, f = 1.5 } }, headers = { ["X-Thing"] = "yes" } } } } })
  local c <close> = client({ headers = { ["X-Default"] = "d", ["X-Both"] = "client" } })
  local r = c:request { path = "/projects/p1", query = { z = "last one", a = "é&=", list = { "1", "2" }, b = true },
    headers = { ["X-Both"] = "request" } }
  t.eq(r.status, 200, "status")
  t.eq(r.json.project, { id = "p1", n = 3, f = 1.5 }, "decoded JSON")
  t.eq(math.type(r.json.project.n), "integer", "whole numbers are integers")
  t.eq(r.headers["x-thing"], "yes", "response headers by lower-case name")
  t.eq(r.attempts, 1, "one attempt")
  local req = s:requests()[1]
  t.eq(req.url, "/api/v2/projects/p1?a=%C3%A9%26%3D&b=true&list=1&list=2&z=last%20one", "query string")
  t.eq(req.headers["x-default"], "d", "client header")
  t.eq(req.headers["x-both"], "request", "the request's header overrides the client's")
  t.eq(req.headers.expect, nil, "no 100-continue")
  t.match(req.headers["user-agent"], "^pgvault/", "user agent")
end)

t.test("POST json: body encoded, content type and accept set, method defaults to POST", function()
  local s = fresh()
  s:routes({ { method = "POST", path = "/api/v2/things", responses = { { status = 201, json = { ok = true } } } } })
  local c <close> = client()
  local r = c:request { path = "/things", json = { name = "x", list = { 1, 2 } } }
  t.eq(r.status, 201, "status")
  t.eq(r.json.ok, true, "answer")
  local req = s:requests()[1]
  t.eq(req.method, "POST", "method")
  t.eq(require("cjson").decode(req.body), { name = "x", list = { 1, 2 } }, "body")
  t.eq(req.headers["content-type"], "application/json", "content type")
  t.eq(req.headers.accept, "application/json", "accept")
end)

t.test("PATCH, PUT, DELETE and HEAD; a raw body with its own content type", function()
  local s = fresh()
  s:routes({ { path = "/api/v2/x", responses = {
    { status = 200, body = "plain", headers = { ["content-type"] = "text/plain" } } } } })
  local c <close> = client()
  for _, m in ipairs({ "PATCH", "PUT", "DELETE", "HEAD" }) do
    local r = c:request { method = m:lower(), path = "/x", body = m ~= "HEAD" and ("b-" .. m) or nil,
      headers = { ["Content-Type"] = "text/plain" } }
    t.eq(r.status, 200, m)
    t.eq(r.json, nil, m .. ": a text answer is not decoded")
    t.eq(r.body, m == "HEAD" and "" or "plain", m .. " body")
  end
  local reqs = s:requests()
  t.eq({ reqs[1].method, reqs[2].method, reqs[3].method, reqs[4].method }, { "PATCH", "PUT", "DELETE", "HEAD" },
    "methods")
  t.eq(reqs[1].body, "b-PATCH", "raw body")
  t.eq(reqs[1].headers["content-type"], "text/plain", "own content type")
end)

t.test("GET is retried on 503, 500 and a reset, then succeeds", function()
  local s = fresh()
  s:routes({ { path = "/api/v2/r", responses = { { status = 503 }, { status = 500 }, { action = "reset" },
    { status = 200, json = { fine = 1 } } } } })
  local c <close> = client()
  local r = c:request { path = "/r" }
  t.eq(r.json.fine, 1, "answer after retries")
  t.eq(#s:requests(), 4, "requests the server saw")
end)

t.test("GET gives up after max_attempts with a retryable error naming the attempts", function()
  local s = fresh()
  s:routes({ { path = "/api/v2/down", responses = { { status = 502, body = "bad gateway" } } } })
  local c <close> = client({ max_attempts = 3 })
  local e = t.raises(function() c:request { path = "/down" } end, "failed after 3 attempts: HTTP 502")
  t.eq(e.kind, "http", "kind")
  t.eq(e.http_status, 502, "status")
  t.eq(e.retryable, true, "retryable")
  t.eq(e.method, "GET", "method")
  t.match(e.url, "/api/v2/down$", "url")
  t.eq(#s:requests(), 3, "three attempts")
end)

t.test("POST is not sent again after a network error (reset, timeout)", function()
  local s = fresh()
  s:routes({ { path = "/api/v2/create", responses = { { action = "reset" }, { status = 200 } } },
    { path = "/api/v2/slow", responses = { { action = "hang" } } } })
  local c <close> = client()
  local e = t.raises(function() c:request { path = "/create", json = { a = 1 } } end, "not sent again")
  t.eq(e.retryable, false, "not retryable")
  t.eq(#s:requests(), 1, "one POST only")
  local e2 = t.raises(function() c:request { method = "PATCH", path = "/slow", json = {}, timeout = 1 } end,
    "[Tt]imeout")
  t.eq(e2.retryable, false, "a timed out PATCH is not retryable")
  t.eq(#s:requests(), 2, "one PATCH only")
end)

t.test("POST on a kept-alive connection that the server drops is not sent again (libcurl's own retry)", function()
  local s = fresh()
  s:routes({ { path = "/api/v2/warm", responses = { { status = 200 } } },
    { path = "/api/v2/create", responses = { { action = "reset" }, { status = 200 } } } })
  local c <close> = client()
  c:request { path = "/warm" }
  t.raises(function() c:request { path = "/create", json = { a = 1 } } end, "not sent again")
  local n = 0
  for _, r in ipairs(s:requests()) do if r.path == "/api/v2/create" then n = n + 1 end end
  t.eq(n, 1, "one POST only")
end)

t.test("POST is retried on 429, 503 and retry_statuses, not on 500", function()
  local s = fresh()
  s:routes({ { path = "/api/v2/a", responses = { { status = 429 }, { status = 503 }, { status = 201 } } },
    { path = "/api/v2/locked", responses = { { status = 423, json = { message = "project locked" } },
      { status = 200 } } },
    { path = "/api/v2/boom", responses = { { status = 500, json = { message = "oops" } }, { status = 200 } } } })
  local c <close> = client()
  t.eq(c:request { method = "POST", path = "/a" }.status, 201, "after 429 and 503")
  t.eq(c:request { method = "POST", path = "/locked", retry_statuses = { 423 } }.status, 200, "423 listed")
  local e = t.raises(function() c:request { method = "POST", path = "/boom" } end, "HTTP 500.*oops")
  t.eq(e.retryable, false, "a 500 to a POST may have been processed")
  local n = 0
  for _, r in ipairs(s:requests()) do if r.path == "/api/v2/boom" then n = n + 1 end end
  t.eq(n, 1, "the POST that got a 500 was sent once")
end)

t.test("POST to a port where nothing listens is retried: the request never left", function()
  local port = dead_port()
  local c <close> = http.client { base_url = "http://127.0.0.1:" .. port, retry_base_ms = 5, max_attempts = 3 }
  local e = t.raises(function() c:request { method = "POST", path = "/x", json = {} } end, "failed after 3 attempts")
  t.eq(e.attempts, 3, "attempts")
  t.eq(e.retryable, true, "retryable")
end)

t.test("retry = never: one attempt, even for a GET on 503", function()
  local s = fresh()
  s:routes({ { path = "/api/v2/once", responses = { { status = 503 } } } })
  local c <close> = client()
  local e = t.raises(function() c:request { path = "/once", retry = "never" } end, "HTTP 503")
  t.eq(e.retryable, true, "the status says retryable")
  t.eq(#s:requests(), 1, "one request")
end)

t.test("ok = {404}: an expected status is an answer, not an error", function()
  local s = fresh()
  s:routes({ { path = "/api/v2/gone", responses = { { status = 404, json = { message = "not found" } } } } })
  local c <close> = client()
  local r = c:request { path = "/gone", ok = { 404 } }
  t.eq(r.status, 404, "status")
  t.eq(r.json.message, "not found", "body decoded")
end)

t.test("a refusal: one line with method, URL, status, the server's message, request id; json kept", function()
  local s = fresh()
  s:routes({ { path = "/api/v2/bad", responses = { { status = 422, headers = { ["X-Request-Id"] = "req-77" },
    json = { code = "INVALID", message = "name is\ntoo long" } } } } })
  local c <close> = client()
  local e = t.raises(function() c:request { method = "POST", path = "/bad", json = {} } end)
  t.eq(e.kind, "http", "kind")
  t.eq(e.http_status, 422, "status")
  t.eq(e.request_id, "req-77", "request id")
  t.eq(e.code, "INVALID", "server's error code")
  t.eq(e.json.message, "name is\ntoo long", "decoded error body")
  t.match(e.message, "^POST http://127%.0%.0%.1:%d+/api/v2/bad: HTTP 422 Unprocessable Entity: name is too long$",
    "message")
  t.ok(pgvault.is_error(e), "an error object")
end)

t.test("401 and 404 say what to check; a redirect is not followed", function()
  local s = fresh()
  s:routes({ { path = "/api/v2/auth", responses = { { status = 401 } } },
    { path = "/api/v2/moved", responses = { { status = 302,
      headers = { Location = "https://elsewhere.example/x?token=abc123456" } } } } })
  local c <close> = client()
  t.raises(function() c:request { path = "/auth" } end, "HTTP 401 Unauthorized: check the token or credentials")
  local e = t.raises(function() c:request { path = "/moved" } end,
    "redirected %(HTTP 302 Found%): use the new address, https://elsewhere.example/x%?token=%*%*%*$")
  t.eq(e.http_status, 302, "status")
  t.eq(#s:requests(), 2, "the redirect target was not requested")
end)

t.test("Retry-After: honoured between attempts; a wait beyond 60 s fails at once", function()
  local s = fresh()
  s:routes({ { path = "/a", responses = { { status = 429, headers = { ["Retry-After"] = "1" } }, { status = 200 } } },
    { path = "/c", responses = { { status = 429, headers = { ["Retry-After"] = "3600" } }, { status = 200 } } } })
  local r = child(string.format([[
    local http = require "pgvault.http"
    local c = http.client { base_url = %q, retry_base_ms = 1 }
    assert(c:request { path = "/a" }.status == 200)
    local ok, e = pcall(c.request, c, { path = "/c" })
    print(ok, e.message, e.retryable)
  ]], S:url()))
  t.eq(r.code, 0, "child ran: " .. r.stderr)
  t.match(r.stderr, "GET http://127%.0%.0%.1:%d+/a: HTTP 429 Too Many Requests; retrying in 1%.0s", "waits as asked")
  t.match(r.stdout,
    "^false\tGET [^\t]+/c: HTTP 429 Too Many Requests: the server asks to wait 3600 s before trying again\ttrue",
    "too long a wait")
  local n = 0
  for _, q in ipairs(s:requests()) do if q.path == "/c" then n = n + 1 end end
  t.eq(n, 1, "no retry after a refused wait")
end)

t.test("Retry-After values: delta-seconds and the three HTTP-date forms", function()
  local ra = http._retry_after
  t.eq(ra("120"), 120, "seconds")
  t.eq(ra(" 7 "), 7, "spaces")
  local future = os.time() + 40
  for _, fmt in ipairs({ "!%a, %d %b %Y %H:%M:%S GMT", "!%A, %d-%b-%y %H:%M:%S GMT", "!%a %b %e %H:%M:%S %Y" }) do
    local v = ra(os.date(fmt, future))
    t.ok(v and v > 30 and v <= 40, fmt .. " gives about 40 s: " .. tostring(v))
  end
  t.eq(ra("Wed, 21 Oct 2015 07:28:00 GMT"), 0, "a date in the past: at once")
  t.eq(ra("soon"), nil, "unreadable")
  t.eq(ra("12abc"), nil, "trailing garbage")
  t.eq(ra(""), nil, "empty")
end)

t.test("timeouts: a server that never answers fails after the attempts, not forever", function()
  local s = fresh()
  s:routes({ { path = "/api/v2/hang", responses = { { action = "hang" } } } })
  local c <close> = client({ timeout = 1, max_attempts = 2 })
  local e = t.raises(function() c:request { path = "/hang" } end, "failed after 2 attempts: Timeout")
  t.eq(e.retryable, true, "retryable")
end)

t.test("TLS: a private CA is refused without its bundle (no retry) and accepted with it", function()
  local tls = httpserver.make_tls(h.tmpdir())
  local ts <close> = httpserver.start({ tls = tls })
  ts:routes({ { path = "/ok", responses = { { status = 200, json = { tls = true } } } } })
  local e = t.raises(function()
    http.request { url = ts:url("/ok"), retry_base_ms = 1, ca_bundle = "/nonexistent/no-ca.pem" }
  end, "cannot connect securely")
  t.eq(e.retryable, false, "not retryable")
  local e2 = t.raises(function() http.request { url = ts:url("/ok"), retry_base_ms = 1 } end,
    "cannot connect securely: .*private CA")
  t.eq(e2.attempts, 1, "one attempt")
  t.eq(http.request { url = ts:url("/ok"), ca_bundle = tls.ca }.json.tls, true, "verified with the bundle")
  t.eq(#ts:requests(), 1, "only the verified request got through")
end)

t.test("secrets: never in an error or a log line, even echoed by the server", function()
  local s = fresh()
  local token = "sekr1t-token-" .. math.random(1e6, 9e6)
  s:routes({ { path = "/api/v2/echo", responses = { { status = 400,
    json = { message = "bad token " .. token .. " for key=" .. token } } } },
    { path = "/hc/1b2c3d4e-aaaa-bbbb-cccc-0123456789ab/fail", responses = { { status = 500 } } } })
  local r = child(string.format([[
    local http = require "pgvault.http"
    local c = http.client { base_url = %q, headers = { Authorization = "Bearer %s", ["X-Api-Key"] = "k-%s" },
      retry_base_ms = 1, max_attempts = 2 }
    local ok, e = pcall(c.request, c, { path = "/echo", query = { access_token = "%s", page = "2" } })
    print(e.message, e.url)
    local hc = http.client { base_url = %q, secret_url = true, retry_base_ms = 1, max_attempts = 2 }
    print(tostring(hc))
    local ok2, e2 = pcall(hc.request, hc, { method = "POST", path = "/fail", body = "tail" })
    print(e2.message)
    local ok3, e3 = pcall(http.request, { url = %q, secret_url = true, method = "POST", max_attempts = 1 })
    print(e3.message)
    log.info("the token is %%s", "%s")
  ]], S:url("/api/v2"), token, token, token, S:url("/hc/1b2c3d4e-aaaa-bbbb-cccc-0123456789ab"),
    S:url("/hc/1b2c3d4e-aaaa-bbbb-cccc-0123456789ab/fail"), token))
  t.eq(r.code, 0, "child ran: " .. r.stderr)
  local all = r.stdout .. r.stderr
  t.no_match(all, token, "the token appears nowhere")
  t.no_match(all, "1b2c3d4e%-aaaa", "the secret path appears nowhere")
  t.match(r.stdout, "bad token %*%*%* for key=%*%*%*", "echo masked")
  t.match(r.stdout, "access_token=%*%*%*&page=2", "URL token masked, other parameters shown")
  t.match(r.stdout, "pgvault http client %(http://127%.0%.0%.1:%d+/%*%*%*%)", "tostring masks the secret path")
  t.match(r.stdout, "POST http://127%.0%.0%.1:%d+/%*%*%*/fail: HTTP 500", "secret path masked in errors")
  t.match(r.stdout, "\nPOST http://127%.0%.0%.1:%d+/%*%*%*: HTTP 500", "one-off with secret_url")
  t.match(r.stderr, "debug: http: GET", "debug log lines were written")
  local reqs = s:requests()
  t.eq(reqs[1].headers.authorization, "Bearer " .. token, "the server still got the real token")
end)

t.test("a credential is never sent over plain http to another host", function()
  t.raises(function()
    http.request { url = "http://example.invalid/x", headers = { Authorization = "Bearer abcdefgh" } }
  end, "refusing to send a credential over plain http to http://example%.invalid/x: use https")
end)

t.test("misuse: bad header text, bad method, bad URL, bad path, closed client", function()
  local c = client()
  t.raises(function() c:request { path = "/x", headers = { ["X-A"] = "a\r\nX-Injected: 1" } } end, "line break")
  t.raises(function() c:request { path = "/x", headers = { ["X A"] = "a" } } end, "not an HTTP header name")
  t.raises(function() c:request { path = "/x", method = "G T" } end, "not an HTTP method")
  t.raises(function() c:request { path = "https://evil.example/" } end, "must start with '/'")
  t.raises(function() c:request { path = "/x", retry = "sometimes" } end, "retry")
  t.raises(function() http.request { url = "ftp://x/y" } end, "must start with https:// or http://")
  t.raises(function() http.request { url = "http://x/a b" } end, "space or a control character")
  t.raises(function() http.client { base_url = "x" } end, "https://")
  c:close()
  t.match(tostring(c), "closed", "tostring when closed")
  t.raises(function() c:request { path = "/x" } end, "closed HTTP client")
end)

t.test("answers: size limit, invalid JSON, empty JSON body", function()
  local s = fresh()
  s:routes({ { path = "/big", responses = { { status = 200, body = string.rep("x", 5000) } } },
    { path = "/badjson", responses = { { status = 200, body = "{nope",
      headers = { ["content-type"] = "application/json" } } } },
    { path = "/empty", responses = { { status = 204, headers = { ["content-type"] = "application/json" } } } } })
  t.raises(function() http.request { url = s:url("/big"), max_body = 1000 } end, "larger than 1000 bytes")
  t.raises(function() http.request { url = s:url("/badjson") } end, "HTTP 200 but the answer is not valid JSON")
  local r = http.request { url = s:url("/empty") }
  t.eq({ r.status, r.json, r.body }, { 204, nil, "" }, "no content")
end)

t.test("hmac_sha256: RFC 4231 test cases 1 and 2 (webhook signatures)", function()
  t.eq(http.hmac_sha256(string.rep("\x0b", 20), "Hi There"),
    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
  t.eq(http.hmac_sha256("Jefe", "what do ya want for nothing?"),
    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
end)

t.test("escape and mask_url", function()
  t.eq(http.escape("a b/c?d=é"), "a%20b%2Fc%3Fd%3D%C3%A9", "escape")
  t.eq(http.mask_url("https://u:pw@h.example/p?a=1&api_key=zz&sig=q"), "https://h.example/p?a=1&api_key=***&sig=***",
    "user info and secret parameters")
  t.eq(http.mask_url("https://hc-ping.com/uuid-here", { secret_path = true }), "https://hc-ping.com/***", "secret path")
end)

t.test("Ctrl-C during a request: exit 130 at once, not after the timeout", function()
  local s = fresh()
  s:routes({ { path = "/hang", responses = { { action = "hang" } } } })
  local d = h.tmpdir()
  h.write(d .. "/c.lua", string.format([[
    require("pgvault.http").request { url = %q, timeout = 120 }
  ]], S:url("/hang")))
  local handle, output = children.pgvault({ "run", d .. "/c.lua" })
  local deadline = proc.now() + 20
  while #s:requests() == 0 and proc.now() < deadline do proc.sleep(0.05) end
  t.eq(#s:requests(), 1, "the request arrived")
  handle:kill("INT")
  local code = handle:wait(30)
  handle:close()
  local _, err = output()
  t.eq(code, 130, "exit code: " .. err)
  t.match(err, "interrupted", "says so")
end)
