-- covers: bindings/s3.c bindings/s3/
-- pgvault.s3 under faults, through tests/harness/s3proxy.js between pgvault
-- and the S3 server (Ceph RGW): 503 SlowDown and 500 answers, connections
-- reset in the middle of bodies, slow answers; uploads and downloads still
-- complete byte-identically, and when requests keep failing nothing is left
-- behind (the server's ListMultipartUploads is empty, and the proxy saw the
-- abort). Also HTTPS with a test CA, and listing/aborting multipart uploads.
local t = require "harness.testing"
local h = require "harness.env"
local s3proxy = require "harness.s3proxy"
local s3h = require "harness.s3"
local s3 = require "pgvault.s3"
local stream = require "pgvault.stream"

local MiB = 1024 * 1024

-- One proxy for the file; each test starts from a clean slate (reset).
local PROXY = s3proxy.start()
local function fresh_proxy()
  PROXY:reset()
  return PROXY
end

local direct, make_bucket, make_file, file_sha256 = s3h.direct, s3h.make_bucket, s3h.make_file, s3h.file_sha256

local function upload(proxy, path, url, extra)
  local o = proxy:opts({ url = url, part_size = 5 * MiB, parallel = 3, retry_base_ms = 20 })
  for k, v in pairs(extra or {}) do o[k] = v end
  return stream.run { stream.file_reader(path), stream.sha256(), s3.writer(o) }
end

t.test("uploads and downloads survive 503 SlowDown, 500, resets mid-body and slow answers", function()
  local bucket = make_bucket("faults-mixed")
  local proxy = fresh_proxy()
  local d = h.tmpdir()
  make_file(d .. "/src", 23 * MiB)
  proxy:rules({
    { op = "UploadPart", action = "reset", rate = 0.25 },
    { op = "*", action = "status503", rate = 0.2, retry_after = 0 },
    { op = "*", action = "status500", rate = 0.1 },
    { op = "*", action = "slow", rate = 0.1, ms = 700 },
  })
  local url = "s3://" .. bucket .. "/mixed.bin"
  local r = upload(proxy, d .. "/src", url, { max_attempts = 12 })
  t.eq(r.s3.committed, true)
  t.eq(r.s3.parts, 5)
  proxy:rules({
    { op = "GetObject", action = "reset", rate = 0.5 },
    { op = "*", action = "status503", rate = 0.2 },
    { op = "*", action = "slow", rate = 0.2, ms = 500 },
  })
  local back = stream.run { s3.reader(proxy:opts({ url = url, retry_base_ms = 20, max_attempts = 12 })),
    stream.sha256(), stream.discard() }
  t.eq(back.sha256.sha256, r.sha256.sha256, "download byte-identical")
  t.eq(back.sha256.sha256, file_sha256(d .. "/src"), "upload byte-identical")
  local st = proxy:stats()
  t.ok(st.injected >= 3, "faults were injected: " .. st.injected)
  t.ok(st.digests_checked >= 5, "every body that arrived whole matched its Content-MD5 and SHA-256: "
    .. st.digests_checked)
  t.eq(st.bad_digests, 0)
  t.eq(#proxy:uploads("open"), 0, "no multipart upload left open")
  t.eq(#s3h.open_uploads(bucket), 0, "the server holds no multipart upload")
  t.eq(#proxy:uploads("completed"), 1, "one completed upload")
end)

t.test("a body damaged in transit is refused (BadDigest, as S3 checks Content-MD5) and sent again", function()
  local bucket = make_bucket("faults-digest")
  local proxy = fresh_proxy()
  local d = h.tmpdir()
  make_file(d .. "/src", 12 * MiB)
  proxy:rules({ { op = "UploadPart", action = "corrupt", count = 2 },
    { op = "PutObject", action = "corrupt", count = 1 } })
  local url = "s3://" .. bucket .. "/parts.bin"
  local r = upload(proxy, d .. "/src", url)
  t.eq(r.s3.committed, true)
  local small = "s3://" .. bucket .. "/small.txt"
  s3.put(small, "a small object", proxy:opts({ retry_base_ms = 20 }))
  local st = proxy:stats()
  t.eq(st.bad_digests, 3, "three damaged bodies refused")
  t.eq(#proxy:uploads("open"), 0)
  t.eq(#s3h.open_uploads(bucket), 0, "the server holds no multipart upload")
  local o = direct()
  o.url = url
  local back = stream.run { s3.reader(o), stream.sha256(), stream.discard() }
  t.eq(back.sha256.sha256, file_sha256(d .. "/src"), "what was stored is what was sent")
  t.eq(s3.get(small, direct()), "a small object")
end)

t.test("a download resumes where a reset cut it, with a Range on the same ETag", function()
  local bucket = make_bucket("faults-resume")
  local proxy = fresh_proxy()
  local d = h.tmpdir()
  make_file(d .. "/src", 3 * MiB)
  local url = "s3://" .. bucket .. "/obj"
  stream.run { stream.file_reader(d .. "/src"), s3.writer(proxy:opts({ url = url })) }
  proxy:rules({ { op = "GetObject", action = "reset", count = 2 } })
  local back = stream.run { s3.reader(proxy:opts({ url = url, retry_base_ms = 20 })), stream.sha256(),
    stream.discard() }
  t.eq(back.sha256.sha256, file_sha256(d .. "/src"))
  t.eq(proxy:stats().ops.GetObject, 3, "two cut answers, then the rest")
end)

t.test("parts that keep failing: the upload fails, is aborted, and no object appears", function()
  local bucket = make_bucket("faults-parts")
  local proxy = fresh_proxy()
  local d = h.tmpdir()
  make_file(d .. "/src", 12 * MiB)
  proxy:rules({ { op = "UploadPart", action = "status503" } })
  local url = "s3://" .. bucket .. "/never.bin"
  local err = t.raises(function() upload(proxy, d .. "/src", url, { max_attempts = 3 }) end,
    "failed after 3 attempts")
  t.eq(err.retryable, true)
  t.eq(#proxy:uploads("open"), 0, "no multipart upload left")
  t.eq(#proxy:uploads("aborted"), 1, "the upload was aborted")
  t.eq(#s3h.open_uploads(bucket), 0, "the server holds no multipart upload")
  t.eq(s3.head(url, direct()), nil, "no object under the final name")
end)

t.test("every request failing: a clean failure, no object, no upload", function()
  local bucket = make_bucket("faults-all")
  local proxy = fresh_proxy()
  local d = h.tmpdir()
  make_file(d .. "/src", 11 * MiB)
  proxy:rules({ { op = "*", action = "status500", except = { "AbortMultipartUpload" } } })
  local url = "s3://" .. bucket .. "/never.bin"
  t.raises(function() upload(proxy, d .. "/src", url, { max_attempts = 3 }) end, "InternalError")
  t.eq(#proxy:uploads("open"), 0, "no multipart upload left")
  t.eq(#s3h.open_uploads(bucket), 0, "the server holds no multipart upload")
  t.eq(s3.head(url, direct()), nil, "no object")
  -- and with the creation passing but every later request failing, Abort included
  proxy:reset()
  proxy:rules({ { op = "*", action = "status500", except = { "CreateMultipartUpload", "AbortMultipartUpload" } } })
  t.raises(function() upload(proxy, d .. "/src", url, { max_attempts = 2 }) end, "InternalError")
  t.eq(#proxy:uploads("open"), 0, "aborted")
  t.eq(#proxy:uploads("aborted"), 1)
  t.eq(#s3h.open_uploads(bucket), 0, "the server holds no multipart upload")
  t.eq(s3.head(url, direct()), nil, "no object")
end)

t.test("the multipart ETag (MD5 of the parts' MD5s, -N) is checked; a wrong one removes the object", function()
  local bucket = make_bucket("faults-etag")
  local proxy = fresh_proxy()
  local d = h.tmpdir()
  make_file(d .. "/src", 12 * MiB)
  -- the answer AWS gives: accepted, and it is the one pgvault reports
  proxy:rules({ { op = "CompleteMultipartUpload", action = "etag", mode = "aws" } })
  local url = "s3://" .. bucket .. "/good.bin"
  local r = upload(proxy, d .. "/src", url)
  t.eq(r.s3.committed, true)
  t.eq(r.s3.parts, 3)
  t.match(r.s3.etag, '^"?%x+%-3"?$', "a multipart ETag")
  t.ok(s3.head(url, direct()) ~= nil, "the object is there")
  -- a server that combined other parts: the upload fails and nothing stays
  proxy:reset()
  proxy:rules({ { op = "CompleteMultipartUpload", action = "etag", mode = "wrong" } })
  url = "s3://" .. bucket .. "/bad.bin"
  t.raises(function() upload(proxy, d .. "/src", url) end, "was assembled as %x+%-3, but the parts sent make")
  t.eq(s3.head(url, direct()), nil, "the damaged object was removed")
  t.eq(#proxy:uploads("open"), 0, "no multipart upload left")
  t.eq(#s3h.open_uploads(bucket), 0, "the server holds no multipart upload")
  t.eq(#proxy:uploads("completed"), 1)
end)

t.test("ListMultipartUploads pages through stale uploads and AbortMultipartUpload removes them", function()
  local bucket = make_bucket("faults-uploads")
  local proxy = fresh_proxy()
  local c <close> = s3.client(proxy:opts())
  local made = {}
  for i = 1, 5 do made[i] = c:create_upload("s3://" .. bucket .. "/stale/" .. i) end
  t.eq(#proxy:uploads("open"), 5, "the proxy saw them start")
  local ups = c:uploads("s3://" .. bucket .. "/stale/", { page_size = 2 })
  t.eq(#ups, 5, "three pages")
  t.eq(ups[5].upload_id, made[5])
  t.eq(ups[1].key, "stale/1")
  t.ok(ups[1].upload_id and ups[1].initiated, "id and date")
  for _, u in ipairs(ups) do t.eq(c:abort_upload("s3://" .. bucket .. "/" .. u.key, u.upload_id), true) end
  t.eq(#c:uploads("s3://" .. bucket .. "/"), 0)
  t.eq(#s3h.open_uploads(bucket), 0, "the server agrees")
  t.eq(#proxy:uploads("open"), 0)
end)

t.test("HTTPS: verified with the test CA given, refused without it", function()
  local bucket = make_bucket("faults-tls")
  local d = h.tmpdir()
  local tls = s3h.tls(d)
  local proxy <close> = s3proxy.start({ tls = tls })
  local url = "s3://" .. bucket .. "/tls.txt"
  s3.put(url, "over TLS", proxy:opts())
  t.eq(s3.get(url, proxy:opts()), "over TLS")
  local o = proxy:opts()
  o.ca_bundle = nil -- the system CAs (AWS_CA_BUNDLE may name them) do not know the test CA
  local err = t.raises(function() s3.get(url, o) end, "cannot connect securely")
  t.match(tostring(err), "%-%-ca%-bundle")
  -- the CLI path: AWS_CA_BUNDLE and --ca-bundle
  h.write(d .. "/get.lua", 'local s3 = require "pgvault.s3"\nio.write(s3.get(arg[1], { ca_bundle = arg[2] }))')
  local env = proxy:env({ AWS_CA_BUNDLE = tls.ca })
  local r = h.pgvault({ "run", d .. "/get.lua", url }, { env = env })
  t.eq(r.stdout, "over TLS", r.stderr)
  env.AWS_CA_BUNDLE = false
  r = h.pgvault({ "run", d .. "/get.lua", url }, { env = env })
  t.eq(r.code, 1)
  t.match(r.stderr, "cannot connect securely")
end)

t.test("permission errors fail at once and name the B2 capability the key lacks", function()
  local bucket = make_bucket("faults-perm")
  local proxy = fresh_proxy()
  local url = "s3://" .. bucket .. "/k"
  s3.put(url, "x", proxy:opts())
  proxy:rules({ { op = "DeleteObject", action = "error", status = 403, code = "AccessDenied",
    message = "not entitled" } })
  local err = t.raises(function() s3.delete(url, proxy:opts({ retry_base_ms = 20 })) end, "AccessDenied")
  t.match(tostring(err), "'deleteFiles' capability")
  t.match(tostring(err), "access key id " .. h.s3().access_key)
  t.eq(proxy:stats().ops.DeleteObject, 1, "no retry")
  proxy:rules({ { op = "ListObjectsV2", action = "error", status = 403, code = "AccessDenied",
    message = "application key lacks listAllBucketNames" } })
  t.raises(function() s3.list("s3://" .. bucket .. "/", proxy:opts()) end, "'listAllBucketNames' capability")
end)
