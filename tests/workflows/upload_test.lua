-- covers: scripts/upload.lua scripts/download.lua
-- pgvault upload and download: files to and from the S3 server, checked
-- against manifests; Ctrl-C in the middle of an upload leaves nothing.
local t = require "harness.testing"
local h = require "harness.env"
local s3 = require "pgvault.s3"
local s3proxy = require "harness.s3proxy"
local s3h = require "harness.s3"
local proc = require "pgvault.proc"
local fs = require "pgvault.fs"
local make_bucket, make_file, sha = s3h.make_bucket, s3h.make_file, s3h.file_sha256


t.test("upload a file, download it back byte-identically; the aws CLI agrees", function()
  local bucket = make_bucket("wf-upload")
  local d = h.tmpdir()
  make_file(d .. "/data.bin", 12 * 1024 * 1024)
  local env = h.s3().env
  local r = h.pgvault({ "upload", d .. "/data.bin", "s3://" .. bucket .. "/dir/" }, { env = env })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, "s3://" .. bucket .. "/dir/data.bin  sha256:" .. sha(d .. "/data.bin") .. "\n")
  t.match(r.stderr, "2 parts")
  r = h.pgvault({ "download", "s3://" .. bucket .. "/dir/data.bin", "-o", d .. "/back.bin" }, { env = env })
  t.eq(r.code, 0, r.stderr)
  t.eq(sha(d .. "/back.bin"), sha(d .. "/data.bin"))
  local a = h.aws({ "s3", "cp", "s3://" .. bucket .. "/dir/data.bin", d .. "/aws.bin" })
  t.eq(a.code, 0, a.stderr)
  t.eq(sha(d .. "/aws.bin"), sha(d .. "/data.bin"), "aws reads what pgvault wrote")
  -- the default output name, and refusing to overwrite
  r = h.pgvault({ "download", "s3://" .. bucket .. "/dir/data.bin" }, { env = env, cwd = d })
  t.eq(r.code, 1)
  t.match(r.stderr, "already exists")
  h.write(d .. "/back.bin", "stale")
  r = h.pgvault({ "download", "--force", "s3://" .. bucket .. "/dir/data.bin", "-o", d .. "/back.bin" },
    { env = env })
  t.eq(r.code, 0, r.stderr)
  t.eq(sha(d .. "/back.bin"), sha(d .. "/data.bin"), "--force replaces the file")
  -- standard input, and standard output
  r = h.pgvault({ "upload", "-", "s3://" .. bucket .. "/stdin.txt" }, { env = env, stdin = "from stdin\n" })
  t.eq(r.code, 0, r.stderr)
  r = h.pgvault({ "download", "s3://" .. bucket .. "/stdin.txt", "-o", "-" }, { env = env })
  t.eq(r.stdout, "from stdin\n")
end)

t.test("download checks a backup against its manifest and keeps no file when it does not match", function()
  local bucket = make_bucket("wf-manifest")
  local d = h.tmpdir()
  local env = h.s3().env
  local name = "20261125101830_prod.backup.zst"
  h.write(d .. "/" .. name, "archive bytes")
  local manifest = string.format('{"format": 1, "stored": {"name": "%s", "bytes": 13, "sha256": "%s"}}', name,
    sha(d .. "/" .. name))
  local so = s3h.direct()
  s3.put("s3://" .. bucket .. "/b/" .. name, "archive bytes", so)
  s3.put("s3://" .. bucket .. "/b/" .. name .. ".manifest.json", manifest, so)
  local r = h.pgvault({ "download", "s3://" .. bucket .. "/b/" .. name, "-o", d .. "/good" }, { env = env })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "matches its manifest")
  -- the object changes under the manifest
  s3.put("s3://" .. bucket .. "/b/" .. name, "archive bytez", so)
  r = h.pgvault({ "download", "s3://" .. bucket .. "/b/" .. name, "-o", d .. "/out" }, { env = env })
  t.eq(r.code, 1)
  t.match(r.stderr, "SHA%-256 %x+ but its manifest says")
  local names = fs.listdir(d)
  table.sort(names)
  t.eq(names, { name, "good" }, "no file left, partial or whole")
  r = h.pgvault({ "download", "--no-verify", "s3://" .. bucket .. "/b/" .. name, "-o", d .. "/out" }, { env = env })
  t.eq(r.code, 0, r.stderr)
end)

t.test("errors: a missing file, a bad address, a missing object, a wrong secret", function()
  local bucket = make_bucket("wf-errors")
  local env = h.s3().env
  local d = h.tmpdir()
  local r = h.pgvault({ "upload", d .. "/nope", "s3://" .. bucket .. "/x" }, { env = env })
  t.eq(r.code, 1)
  t.match(r.stderr, "no such file")
  r = h.pgvault({ "upload", "/etc/hostname", "bucket/x" }, { env = env })
  t.eq(r.code, 2)
  t.match(r.stderr, "s3://BUCKET/KEY")
  r = h.pgvault({ "download", "s3://" .. bucket .. "/missing", "-o", d .. "/m" }, { env = env })
  t.eq(r.code, 1)
  t.match(r.stderr, "NoSuchKey")
  t.eq(fs.listdir(d), {}, "no file left, partial or whole")
  local bad = {}
  for k, v in pairs(env) do bad[k] = v end
  bad.AWS_SECRET_ACCESS_KEY = "definitely-not-the-secret"
  r = h.pgvault({ "upload", "/etc/hostname", "s3://" .. bucket .. "/x" }, { env = bad })
  t.eq(r.code, 1)
  t.match(r.stderr, "SignatureDoesNotMatch")
  t.match(r.stderr, "access key id " .. h.s3().access_key)
  t.no_match(r.stderr, "definitely%-not%-the%-secret")
  -- one line
  t.eq(select(2, r.stderr:gsub("\n", "")), 1, "one error line: " .. r.stderr)
end)

t.test("Ctrl-C in the middle of an upload: exit 130, no object, no multipart upload left", function()
  local bucket = make_bucket("wf-sigint")
  local proxy <close> = s3proxy.start()
  local d = h.tmpdir()
  make_file(d .. "/big", 40 * 1024 * 1024)
  proxy:rules({ { op = "UploadPart", action = "slow", ms = 3000 } })
  local argv = { h.bin, "upload", d .. "/big", "s3://" .. bucket .. "/big", "--part-size", "5", env = proxy:env(),
    stdout = "pipe", stderr = "pipe" }
  local child = proc.spawn(argv)
  local deadline = proc.now() + 30
  while #proxy:uploads("open") == 0 and proc.now() < deadline do proc.sleep(0.05) end
  t.eq(#proxy:uploads("open"), 1, "an upload is under way")
  proc.sleep(0.3)
  child:kill("INT")
  local code = child:wait(30)
  t.eq(code, 130, "exit code")
  t.eq(#proxy:uploads("open"), 0, "no multipart upload left")
  t.eq(#proxy:uploads("aborted"), 1, "aborted")
  t.eq(#s3h.open_uploads(bucket), 0, "the server holds no multipart upload")
  t.eq(s3.head("s3://" .. bucket .. "/big", s3h.direct()), nil, "no object")
end)
