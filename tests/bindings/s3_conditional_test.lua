-- covers: bindings/s3.c bindings/s3/writer.c
-- Writes that never replace an object: client:put(url, data,
-- {if_none_match = true}) and s3.writer{if_none_match = true} fail with
-- kind "exists" on a taken key and leave it as it was. A HEAD comes first
-- (RGW 16 honours If-None-Match on PutObject with 412, but ignores it on
-- CompleteMultipartUpload); the header settles a race after the HEAD; a
-- server that answers the header with 501 is written to after the HEAD
-- alone. The proxy plays the other servers: one that honours the header on
-- CompleteMultipartUpload (AWS), one that refuses it (501), and a rival
-- writer that creates the key between the HEAD and the write.
local t = require "harness.testing"
local h = require "harness.env"
local s3h = require "harness.s3"
local s3proxy = require "harness.s3proxy"
local s3 = require "pgvault.s3"
local stream = require "pgvault.stream"

local MiB = 1024 * 1024
local PROXY = s3proxy.start()
local BUCKET = s3h.make_bucket("s3-conditional")
local D = h.tmpdir()
local SRC = s3h.make_file(D .. "/src", 11 * MiB)

local function url(key) return "s3://" .. BUCKET .. "/" .. key end

local function fresh(rules)
  PROXY:reset()
  PROXY:rules(rules or {})
  return s3.client(PROXY:opts({ retry_base_ms = 10 }))
end

local function upload(c, key)
  return stream.run { stream.file_reader(SRC), c:writer { url = url(key), part_size = 5 * MiB, if_none_match = true } }
end

local function taken(fn, key)
  local err = t.raises(fn, "already exists: nothing was overwritten")
  t.eq(err.kind, "exists")
  t.eq(err.url, url(key))
  return err
end

t.test("put: a new key is written, a taken one is refused and kept", function()
  local c <close> = fresh()
  c:put(url("put/a"), "first", { if_none_match = true })
  taken(function() c:put(url("put/a"), "second", { if_none_match = true }) end, "put/a")
  t.eq(s3.get(url("put/a"), s3h.direct()), "first", "unchanged")
  t.eq(PROXY:stats().ops.PutObject, 1, "the HEAD saw it: no second PutObject")
  c:put(url("put/a"), "replaced") -- without the option, as before
  t.eq(s3.get(url("put/a"), s3h.direct()), "replaced")
end)

t.test("put: a rival writer between the HEAD and the write loses nothing (the server's 412)", function()
  s3.put(url("put/race"), "the rival's", s3h.direct())
  -- the HEAD is answered as if the key were free: RGW's own 412 decides
  local c <close> = fresh({ { op = "HeadObject", action = "error", status = 404, code = "NoSuchKey" } })
  taken(function() c:put(url("put/race"), "ours", { if_none_match = true }) end, "put/race")
  t.eq(PROXY:stats().ops.PutObject, 1, "sent with If-None-Match and refused")
  t.eq(s3.get(url("put/race"), s3h.direct()), "the rival's")
end)

t.test("put: a server that refuses If-None-Match (501) is written to after a HEAD, remembered", function()
  local c <close> = fresh({ { op = "PutObject", action = "error", status = 501, code = "NotImplemented",
    header = "if-none-match" } })
  c:put(url("put/no-cond-1"), "one", { if_none_match = true })
  t.eq(PROXY:stats().ops.PutObject, 2, "refused with the header, written without it")
  c:put(url("put/no-cond-2"), "two", { if_none_match = true })
  t.eq(PROXY:stats().ops.PutObject, 3, "the client remembers: no header the second time")
  taken(function() c:put(url("put/no-cond-1"), "again", { if_none_match = true }) end, "put/no-cond-1")
  t.eq(s3.get(url("put/no-cond-1"), s3h.direct()), "one")
  t.eq(s3.get(url("put/no-cond-2"), s3h.direct()), "two")
end)

t.test("writer: a taken key fails before any part is sent", function()
  s3.put(url("w/taken"), "kept", s3h.direct())
  local c <close> = fresh()
  taken(function() upload(c, "w/taken") end, "w/taken")
  t.eq(PROXY:stats().ops.CreateMultipartUpload, nil, "no upload started")
  t.eq(PROXY:stats().ops.UploadPart, nil)
  t.eq(s3.get(url("w/taken"), s3h.direct()), "kept")
  -- a small object (one PutObject) too
  taken(function()
    stream.run { stream.string("small"), c:writer { url = url("w/taken"), if_none_match = true } }
  end, "w/taken")
  t.eq(s3.get(url("w/taken"), s3h.direct()), "kept")
end)

t.test("writer: a key taken during the upload is found before completing (RGW ignores the header there)", function()
  s3.put(url("w/during"), "arrived during the upload", s3h.direct())
  -- the first HEAD (before the upload) misses it, as if it were not there yet
  local c <close> = fresh({ { op = "HeadObject", action = "error", status = 404, code = "NoSuchKey", count = 1 } })
  taken(function() upload(c, "w/during") end, "w/during")
  local ops = PROXY:stats().ops
  t.eq(ops.UploadPart, 3, "the parts were sent")
  t.eq(ops.CompleteMultipartUpload, nil, "never completed")
  t.eq(#s3h.open_uploads(BUCKET, "w/during"), 0, "the upload was aborted")
  t.eq(s3.get(url("w/during"), s3h.direct()), "arrived during the upload")
end)

t.test("writer: a server that honours If-None-Match on the completion (AWS) refuses a rival's key", function()
  local c <close> = fresh({ { op = "CompleteMultipartUpload", action = "error", status = 412,
    code = "PreconditionFailed", header = "if-none-match" } })
  taken(function() upload(c, "w/aws") end, "w/aws")
  t.eq(PROXY:stats().ops.CompleteMultipartUpload, 1, "sent with the header")
  t.eq(#s3h.open_uploads(BUCKET, "w/aws"), 0, "the upload was aborted")
  t.eq(s3.head(url("w/aws"), s3h.direct()), nil)
end)

t.test("writer: a completion refused with 501 for the header is sent again without it", function()
  local c <close> = fresh({ { op = "CompleteMultipartUpload", action = "error", status = 501,
    code = "NotImplemented", header = "if-none-match" } })
  local r = upload(c, "w/no-cond")
  t.eq(r.s3.committed, true)
  t.eq(PROXY:stats().ops.CompleteMultipartUpload, 2)
  t.eq(s3h.file_sha256(SRC), stream.run { s3.reader(s3h.direct({ url = url("w/no-cond") })), stream.sha256(),
    stream.discard() }.sha256.sha256, "stored whole")
end)
