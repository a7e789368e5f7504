-- covers: bindings/s3.c bindings/s3/
-- pgvault.s3: the SigV4 signer against AWS's published test suite and
-- against botocore's signer on random requests; then every request against
-- the harness's S3 server (Ceph RGW, which checks signatures), interop with the aws
-- CLI both ways, and the errors a user meets (wrong secret, missing bucket).
local t = require "harness.testing"
local h = require "harness.env"
local s3h = require "harness.s3"
local s3 = require "pgvault.s3"
local stream = require "pgvault.stream"
local fs = require "pgvault.fs"
local cjson = require "cjson"

local SUITE = h.root .. "/tests/data/aws4_testsuite"

local opts, make_bucket, file_sha256 = s3h.direct, s3h.make_bucket, s3h.file_sha256

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
  -- unknown length: parts grow every 1,000, so 10,000 parts hold far more than 1,000 x 8 MiB
  t.eq(s3.part_size(-1, 8 * MiB, 1000), 8 * MiB)
  t.eq(s3.part_size(-1, 8 * MiB, 1001), 16 * MiB)
  t.eq(s3.part_size(100 * MiB, 8 * MiB, 5000), 8 * MiB, "a known size never grows")
  local total = 0
  for n = 1, 10000 do total = total + s3.part_size(-1, 8 * MiB, n) end
  t.ok(total >= 5 * 1024 * 1024 * MiB, "10,000 growing parts hold at least 5 TiB: " .. total)
  t.eq(s3.part_size(-1, 8 * MiB, 10000), 4096 * MiB, "never above 5 GiB")
end)

t.test("addresses: s3://bucket/key parsed, anything else refused", function()
  local b, k = s3.parse_url("s3://bkt/a/b c.txt")
  t.eq(b, "bkt")
  t.eq(k, "a/b c.txt")
  b, k = s3.parse_url("s3://bkt")
  t.eq({ b, k }, { "bkt", "" })
  t.raises(function() s3.parse_url("http://x/y") end, "not an S3 address")
  t.raises(function() s3.parse_url("s3:///key") end, "no valid bucket")
  local c = s3.client { endpoint_url = "http://127.0.0.1:9", region = "us-east-1", access_key_id = "AKID",
    secret_access_key = "not-used" }
  for _, call in ipairs { "put", "delete", "create_upload" } do
    t.raises(function() c[call](c, "s3://bkt/", "x") end, "must name an object", call .. " refuses a bucket alone")
  end
end)

-- Server tests ---------------------------------------------------------------

local function random_bytes(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local s = f:read(n)
  f:close()
  return s
end

local function sha256(data)
  return stream.run { stream.string(data), stream.sha256(), stream.discard() }.sha256.sha256
end


t.test("put, head, get (whole and ranged), list, delete on the S3 server", function()
  local c <close> = s3.client(opts())
  t.eq(c:create_bucket("s3://s3-basic"), true, "created")
  t.eq(c:create_bucket("s3://s3-basic"), false, "already ours")
  local bucket = "s3-basic"
  local url = "s3://" .. bucket .. "/dir/hello.txt"
  local r = c:put(url, "hello world", { content_type = "text/plain" })
  t.eq(r.etag, "5eb63bbbe01eeed093cb22bb8f5acdc3", "ETag is the MD5")
  local hd = c:head(url)
  t.eq(hd.size, 11)
  t.eq(hd.etag, "5eb63bbbe01eeed093cb22bb8f5acdc3")
  t.eq(c:get(url), "hello world")
  t.eq(c:get(url, { range = "bytes=6-10" }), "world")
  t.eq(c:head("s3://" .. bucket .. "/dir/missing"), nil, "a missing key heads to nil")
  local objs = c:list("s3://" .. bucket .. "/dir/")
  t.eq(#objs, 1)
  t.eq(objs[1].key, "dir/hello.txt")
  t.eq(objs[1].size, 11)
  c:delete(url)
  t.eq(c:head(url), nil, "deleted")
  local info = c:info()
  t.eq(info.access_key_id, h.s3().access_key)
  t.eq(info.path_style, true, "custom endpoints use path style")
  t.no_match(tostring(c), h.s3().secret_key, "no secret in tostring")
end)

t.test("ListObjectsV2 paginates with continuation tokens; delimiters give prefixes", function()
  local bucket = make_bucket("s3-pages")
  local c <close> = s3.client(opts())
  for i = 1, 23 do c:put(string.format("s3://%s/p/%03d", bucket, i), tostring(i)) end
  c:put("s3://" .. bucket .. "/p/sub/x", "x")
  local objs = c:list("s3://" .. bucket .. "/p/", { page_size = 5 })
  t.eq(#objs, 24, "all pages")
  t.eq(objs[1].key, "p/001")
  t.eq(objs[23].key, "p/023")
  local some = c:list("s3://" .. bucket .. "/p/", { page_size = 5, max = 7 })
  t.eq(#some, 7, "max stops early")
  local top, prefixes = c:list("s3://" .. bucket .. "/p/", { delimiter = "/" })
  t.eq(#top, 23)
  t.eq(prefixes, { "p/sub/" })
  local keys = {}
  for _, o in ipairs(objs) do keys[#keys + 1] = o.key end
  t.eq(c:delete_many("s3://" .. bucket .. "/", keys), 24)
  t.eq(#c:list("s3://" .. bucket .. "/"), 0, "DeleteObjects removed them")
end)

local function roundtrip_writer(bucket, key, data, wopts)
  local o = opts(wopts)
  o.url = "s3://" .. bucket .. "/" .. key
  return stream.run { stream.string(data), s3.writer(o) }
end

t.test("writer: single PutObject, empty object, keys with spaces and non-ASCII; aws CLI reads them back", function()
  local bucket = make_bucket("s3-interop")
  local d = h.tmpdir()
  local cases = {
    { key = "plain/small.bin", data = random_bytes(1000) },
    { key = "empty/zero", data = "" },
    { key = "with spaces/a b  c.txt", data = "spaces\n" },
    { key = "ünïcødé/日本語 ファイル.bin", data = random_bytes(4096) },
  }
  for _, case in ipairs(cases) do
    local r = roundtrip_writer(bucket, case.key, case.data)
    t.eq(r.s3.committed, true)
    t.eq(r.s3.multipart, false, "small objects are one PutObject")
  end
  local a = h.aws({ "s3", "cp", "--recursive", "s3://" .. bucket .. "/", d .. "/" })
  t.eq(a.code, 0, "aws download: " .. a.stderr)
  for _, case in ipairs(cases) do
    t.eq(h.read(d .. "/" .. case.key) == case.data, true, "byte-identical: " .. case.key)
  end
end)

t.test("multipart upload of 100 MiB in parallel parts; aws CLI downloads it byte-identically", function()
  local bucket = make_bucket("s3-multipart")
  local d = h.tmpdir()
  local src = d .. "/src.bin"
  h.run({ "sh", "-c", "head -c 104857600 /dev/urandom > " .. src })
  local o = opts({ url = "s3://" .. bucket .. "/big/100 MiB é.bin", part_size = 8 << 20, parallel = 4 })
  local r = stream.run { stream.file_reader(src), stream.sha256(), s3.writer(o) }
  t.eq(r.s3.multipart, true)
  t.eq(r.s3.parts, 13, "100 MiB in 8 MiB parts")
  -- RGW completes with an empty <ETag/>: the writer checks the object's own
  t.match(r.s3.etag, '^"?%x+%-13"?$', "the multipart ETag (MD5 of the parts' MD5s, -13)")
  local a = h.aws({ "s3", "cp", o.url, d .. "/back.bin" })
  t.eq(a.code, 0, "aws download: " .. a.stderr)
  t.eq(file_sha256(d .. "/back.bin"), r.sha256.sha256, "byte-identical")
  -- and our streaming reader, whole and ranged
  local back = stream.run { s3.reader(opts({ url = o.url })), stream.sha256(), stream.discard() }
  t.eq(back.sha256.sha256, r.sha256.sha256, "reader: byte-identical")
  t.eq(back.s3.bytes, 104857600)
  local part = stream.run { s3.reader(opts({ url = o.url, range = { 1000, 1999 } })), stream.buffer() }
  local f = assert(io.open(src, "rb"))
  f:seek("set", 1000)
  t.eq(part.buffer.data == f:read(1000), true, "range 1000-1999")
  f:close()
end)

t.test("what the aws CLI uploads (multipart, empty, odd keys) pgvault reads byte-identically", function()
  local bucket = make_bucket("s3-from-aws")
  local d = h.tmpdir()
  local keys = { "a/big.bin", "a/empty", "ключ с пробелами/é è.txt" }
  h.run({ "mkdir", "-p", d .. "/a", d .. "/ключ с пробелами" })
  h.run({ "sh", "-c", "head -c 20000000 /dev/urandom > " .. d .. "/a/big.bin" })
  h.write(d .. "/a/empty", "")
  h.write(d .. "/" .. keys[3], "odd key\n")
  local a = h.aws({ "s3", "cp", "--recursive", d .. "/", "s3://" .. bucket .. "/" })
  t.eq(a.code, 0, "aws upload: " .. a.stderr)
  for _, key in ipairs(keys) do
    local r = stream.run { s3.reader(opts({ url = "s3://" .. bucket .. "/" .. key })), stream.sha256(),
      stream.discard() }
    t.eq(r.sha256.sha256, file_sha256(d .. "/" .. key), "byte-identical: " .. key)
  end
end)

t.test("a wrong secret fails fast, naming the key id and endpoint but never the secret", function()
  local bucket = make_bucket("s3-auth")
  local wrong = "wrong-secret-" .. sha256(random_bytes(8)):sub(1, 20)
  local t0 = os.time()
  local err = t.raises(function()
    s3.put("s3://" .. bucket .. "/x", "data", opts({ secret_access_key = wrong }))
  end, "SignatureDoesNotMatch")
  t.ok(os.time() - t0 < 5, "no retries on an authentication error")
  t.eq(err.kind, "s3")
  t.eq(err.http_status, 403)
  t.eq(err.retryable, false)
  t.match(tostring(err), h.s3().access_key, "names the access key id")
  t.match(tostring(err), h.s3().endpoint:gsub("%p", "%%%0"), "names the endpoint")
  t.no_match(tostring(err), wrong, "never the secret")
  -- the writer too, before any source runs
  local w = s3.writer(opts({ url = "s3://" .. bucket .. "/y", secret_access_key = wrong }))
  t.raises(function() stream.run { stream.string("abc"), w } end, "SignatureDoesNotMatch")
end)

t.test("a missing bucket says so", function()
  local err = t.raises(function()
    stream.run { stream.string("abc"), s3.writer(opts({ url = "s3://no-such-bucket-pgv/x" })) }
  end, "bucket 'no%-such%-bucket%-pgv' does not exist")
  t.eq(err.code, "NoSuchBucket")
  t.raises(function() s3.list("s3://no-such-bucket-pgv/", opts()) end, "does not exist")
  local e2 = t.raises(function() s3.get("s3://s3-never-made-bucket/x", opts()) end)
  t.match(tostring(e2), "does not exist")
end)

t.test("a local clock off by an hour is corrected from the server's Date", function()
  local bucket = make_bucket("s3-skew")
  local c <close> = s3.client(opts({ clock_skew = -3600 }))
  c:put("s3://" .. bucket .. "/skewed", "on time")
  t.eq(c:get("s3://" .. bucket .. "/skewed"), "on time")
end)

t.test("settings: profiles from the shared files, region and endpoint from the config file", function()
  local d = h.tmpdir()
  h.write(d .. "/credentials", "[default]\naws_access_key_id = DEFKEY\naws_secret_access_key = defsecret\n\n" ..
    "[b2]\naws_access_key_id = B2KEY\naws_secret_access_key = b2secret\n")
  h.write(d .. "/config", "[default]\nregion = eu-west-1\n\n[profile b2]\nregion = us-west-004\n" ..
    "endpoint_url = https://s3.us-west-004.backblazeb2.com\n")
  local code = [[
    local s3 = require "pgvault.s3"
    local c = s3.client{ profile = arg[1] ~= "" and arg[1] or nil }
    local i = c:info()
    print(i.access_key_id, i.region, i.endpoint, i.profile, i.path_style)
  ]]
  h.write(d .. "/info.lua", code)
  local env = { AWS_SHARED_CREDENTIALS_FILE = d .. "/credentials", AWS_CONFIG_FILE = d .. "/config",
    AWS_ACCESS_KEY_ID = false, AWS_SECRET_ACCESS_KEY = false, AWS_PROFILE = false, AWS_REGION = false,
    AWS_DEFAULT_REGION = false, AWS_ENDPOINT_URL = false, AWS_ENDPOINT_URL_S3 = false }
  local r = h.pgvault({ "run", d .. "/info.lua", "" }, { env = env })
  t.eq(r.stdout, "DEFKEY\teu-west-1\thttps://s3.eu-west-1.amazonaws.com\tdefault\tfalse\n", r.stderr)
  r = h.pgvault({ "run", d .. "/info.lua", "b2" }, { env = env })
  t.eq(r.stdout, "B2KEY\tus-west-004\thttps://s3.us-west-004.backblazeb2.com\tb2\ttrue\n", r.stderr)
  env.AWS_PROFILE = "b2"
  env.AWS_REGION = "us-east-005"
  r = h.pgvault({ "run", d .. "/info.lua", "" }, { env = env })
  t.eq(r.stdout, "B2KEY\tus-east-005\thttps://s3.us-west-004.backblazeb2.com\tb2\ttrue\n", r.stderr)
  r = h.pgvault({ "run", d .. "/info.lua", "nope" }, { env = env })
  t.eq(r.code, 1)
  t.match(r.stderr, "profile 'nope' not found")
  env.AWS_SHARED_CREDENTIALS_FILE, env.AWS_PROFILE = "/nonexistent", false
  r = h.pgvault({ "run", d .. "/info.lua", "" }, { env = env })
  t.eq(r.code, 1)
  t.match(r.stderr, "no AWS credentials")
end)

t.test("S3 XML: expat tree of listings and errors; malformed answers refused; fuzz corpus replays", function()
  local dir = h.root .. "/tests/fuzz/s3xml_corpus"
  local list = assert(s3._xml(h.read(dir .. "/list")))
  t.eq(list.name, "ListBucketResult")
  local contents
  for _, c in ipairs(list) do if c.name == "Contents" then contents = c end end
  t.eq(contents[1].text, "p/a & b", "entities decoded")
  local err = assert(s3._xml(h.read(dir .. "/error")))
  t.eq(err[1].text, "SignatureDoesNotMatch")
  local x, why = s3._xml(h.read(dir .. "/malformed"))
  t.eq(x, nil)
  t.match(why, "malformed XML")
  t.eq((s3._xml(h.read(dir .. "/two_roots"))), nil, "two roots")
  t.eq((s3._xml(string.rep("<a>", 40) .. string.rep("</a>", 40))), nil, "too deep")
  -- an empty element after a sibling with text (RGW's <Key>k</Key><ETag></ETag>)
  local done = assert(s3._xml(h.read(dir .. "/complete_empty_etag")))
  t.eq(done[3].name, "Key")
  t.eq(done[3].text, "big/100 MiB é.bin")
  t.eq(done[4].name, "ETag")
  t.eq(done[4].text, "", "an empty element is empty, not its sibling's text")
  local names = fs.listdir(dir)
  t.ok(#names >= 6, "corpus present")
  for _, name in ipairs(names) do
    local ok, res = pcall(s3._xml, h.read(dir .. "/" .. name))
    t.ok(ok, name .. ": " .. tostring(res))
  end
end)

t.test("aws shared files: sections, nested blocks, comments, long lines; fuzz corpus replays", function()
  local text = "[default]\nregion = eu-west-1\n# region = commented\n\n[profile b2]\nregion=us-west-004\n"
    .. "s3 =\n  endpoint_url = https://s3.example\n  addressing_style = path\nca_bundle = /x.pem\n"
    .. "[ profile spaced ]\nregion = sp\n"
  local b2 = s3._ini(text, "profile b2")
  t.eq(b2.found, true)
  t.eq({ b2[1], b2[2], b2[3], b2[4] }, { { "region", "us-west-004" }, { "s3.endpoint_url", "https://s3.example" },
    { "s3.addressing_style", "path" }, { "ca_bundle", "/x.pem" } })
  t.eq(s3._ini(text, "default")[1], { "region", "eu-west-1" })
  t.eq(s3._ini(text, "profile spaced")[1], { "region", "sp" }, "a header's inner spaces are trimmed")
  t.eq(s3._ini(text, "profile nope").found, false)
  -- a line longer than any buffer is one value, cut, never a second entry made of its tail
  local long = string.rep("k", 6000) .. "aws_secret_access_key = tail"
  local sec = s3._ini("[default]\naws_access_key_id = " .. long .. "\n", "default")
  t.eq(#sec, 1, "one entry")
  t.eq(#sec[1][2], 2047, "cut to the value's room")
  local dir = h.root .. "/tests/fuzz/awsconfig_corpus"
  local names = fs.listdir(dir)
  t.ok(#names >= 6, "corpus present")
  for _, name in ipairs(names) do
    local data = h.read(dir .. "/" .. name)
    local ok, res = pcall(s3._ini, data, data:match("^[^\n]*"))
    t.ok(ok, name .. ": " .. tostring(res))
  end
end)
