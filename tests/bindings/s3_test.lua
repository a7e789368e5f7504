-- pgvault.s3: the SigV4 signer against AWS's published test suite and
-- against botocore's signer on random requests; then every request against
-- the harness's S3 server (which checks signatures), interop with the aws
-- CLI both ways, and the errors a user meets (wrong secret, missing bucket).
local t = require "harness.testing"
local h = require "harness.env"
local s3 = require "pgvault.s3"
local stream = require "pgvault.stream"
local fs = require "pgvault.fs"
local cjson = require "cjson"

local SUITE = h.root .. "/tests/data/aws4_testsuite"

local function opts(extra)
  local c = h.s3()
  local o = { endpoint_url = c.endpoint, region = c.region, access_key_id = c.access_key,
    secret_access_key = c.secret_key }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

local function unhex(s)
  return (s:gsub("%%(%x%x)", function(x) return string.char(tonumber(x, 16)) end))
end

-- Parses a test-suite .req file into what s3._sign takes.
local function parse_req(text)
  local head, body = text:match("^(.-)\n\n(.*)$")
  head = head or text
  local lines = {}
  for line in (head .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = line end
  local method, target = lines[1]:match("^(%S+) (.-) HTTP/1%.1$")
  local path, query = target:match("^([^?]*)%??(.*)$")
  local q = {}
  for pair in query:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=(.*)$")
    q[#q + 1] = { unhex(k or pair), v and unhex(v) or nil }
  end
  local headers, date = {}, nil
  for i = 2, #lines do
    local cont = lines[i]:match("^%s+(.*)$")
    if cont and #headers > 0 then
      headers[#headers][2] = headers[#headers][2] .. "\n" .. cont
    else
      local n, v = lines[i]:match("^([^:]+):(.*)$")
      if n then
        headers[#headers + 1] = { n, v }
        if n:lower() == "x-amz-date" then date = v end
      end
    end
  end
  return { method = method, path = unhex(path), query = q, headers = headers, payload = body or "",
    date = date }
end

t.test("SigV4 matches AWS's published test suite (canonical request, string to sign, signature)", function()
  local names = {}
  for _, f in ipairs(fs.listdir(SUITE)) do
    local base = f:match("^(.*)%.req$")
    if base then names[#names + 1] = base end
  end
  table.sort(names)
  t.ok(#names >= 25, "test-suite cases found: " .. #names)
  for _, name in ipairs(names) do
    local req = parse_req(h.read(SUITE .. "/" .. name .. ".req"))
    req.access_key, req.secret_key = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    req.region, req.service = "us-east-1", "service"
    if name == "get-vanilla-with-session-token" then
      req.headers[#req.headers + 1] = { "X-Amz-Security-Token",
        "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267" }
    end
    local authz, creq, sts = s3._sign(req)
    t.eq(creq, h.read(SUITE .. "/" .. name .. ".creq"), name .. " canonical request")
    t.eq(sts, h.read(SUITE .. "/" .. name .. ".sts"), name .. " string to sign")
    t.eq(authz, h.read(SUITE .. "/" .. name .. ".authz"), name .. " authorization")
  end
end)

t.test("SigV4 agrees byte for byte with botocore's S3 signer on random requests", function()
  math.randomseed(os.time())
  local alphabet = { "a", "Z", "0", "-", "_", ".", "~", " ", "/", "+", "=", "&", "%", "é", "日本", "ß", "!", "*",
    "'", "(", ")", ":", "@", ",", ";", "$" }
  local function rand_str(n)
    local out = {}
    for i = 1, math.random(1, n) do out[i] = alphabet[math.random(#alphabet)] end
    return table.concat(out)
  end
  local methods = { "GET", "PUT", "POST", "DELETE", "HEAD" }
  local reqs, mine = {}, {}
  for i = 1, 150 do
    local key = rand_str(30):gsub("^/+", "")
    local path = "/bucket-" .. i .. "/" .. key
    local params, seen = {}, {}
    for _ = 1, math.random(0, 4) do
      local k = rand_str(8)
      if not seen[k] then
        seen[k] = true
        params[#params + 1] = { k, rand_str(12) }
      end
    end
    local date = os.date("!%Y%m%dT%H%M%SZ", math.random(1500000000, 1900000000))
    local headers = { { "Host", "127.0.0.1:" .. math.random(1024, 65535) }, { "x-amz-date", date } }
    if math.random() < 0.5 then headers[#headers + 1] = { "Content-Type", "text/plain;  charset=utf-8 " } end
    if math.random() < 0.5 then headers[#headers + 1] = { "x-amz-meta-Note", "  two  spaces\tand tab " } end
    if math.random() < 0.3 then headers[#headers + 1] = { "Range", "bytes=0-" .. math.random(1, 1000) } end
    if math.random() < 0.3 then headers[#headers + 1] = { "Content-MD5", "1B2M2Y8AsgTpgAmY7PhCfg==" } end
    local token = math.random() < 0.3 and ("tok/" .. rand_str(20)) or nil
    if token then headers[#headers + 1] = { "X-Amz-Security-Token", token } end
    local body = math.random() < 0.5 and rand_str(200) or ""
    local region = ({ "us-east-1", "eu-central-003", "us-west-004" })[math.random(3)]
    local ak, sk = "AKIA" .. math.random(1e9), "secret/" .. rand_str(20)
    local method = methods[math.random(#methods)]
    local py_headers = {}
    for _, hd in ipairs(headers) do
      local n = hd[1]:lower()
      if n ~= "x-amz-date" and n ~= "x-amz-security-token" then py_headers[#py_headers + 1] = hd end
    end
    reqs[i] = { method = method, host = headers[1][2], path = path, params = params, headers = py_headers,
      body = body, date = date, access_key = ak, secret_key = sk, region = region, token = token }
    mine[i] = { method = method, path = path, query = params, headers = headers, payload = body, date = date,
      access_key = ak, secret_key = sk, region = region, service = "s3", sha256_header = true }
  end
  local r = h.run({ "/usr/bin/python3", h.root .. "/tests/sigv4_botocore.py" }, { stdin = cjson.encode(reqs) })
  t.eq(r.code, 0, "botocore helper: " .. r.stderr)
  local theirs = cjson.decode(r.stdout)
  t.eq(#theirs, #reqs, "answers")
  for i, want in ipairs(theirs) do
    local authz, creq, sts = s3._sign(mine[i])
    t.eq(creq, want.creq, "request " .. i .. " canonical request")
    t.eq(sts, want.sts, "request " .. i .. " string to sign")
    t.eq(authz, want.authorization, "request " .. i .. " authorization")
  end
end)

t.test("part sizes: at least 5 MiB, at most 10,000 parts, whole MiB", function()
  local MiB = 1024 * 1024
  t.eq(s3.part_size(-1), 8 * MiB, "unknown size: the default")
  t.eq(s3.part_size(100, 1), 5 * MiB, "never under 5 MiB")
  t.eq(s3.part_size(100 * MiB), 8 * MiB)
  local big = 200 * 1024 * MiB -- 200 GiB
  local ps = s3.part_size(big)
  t.ok(ps * 10000 >= big, "200 GiB fits in 10,000 parts of " .. ps)
  t.eq(ps % MiB, 0, "whole MiB")
  t.ok(ps <= 21 * MiB, "no larger than needed: " .. ps)
end)

t.test("addresses: s3://bucket/key parsed, anything else refused", function()
  local b, k = s3.parse_url("s3://bkt/a/b c.txt")
  t.eq(b, "bkt")
  t.eq(k, "a/b c.txt")
  b, k = s3.parse_url("s3://bkt")
  t.eq({ b, k }, { "bkt", "" })
  t.raises(function() s3.parse_url("http://x/y") end, "not an S3 address")
  t.raises(function() s3.parse_url("s3:///key") end, "no valid bucket")
end)
