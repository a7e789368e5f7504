-- covers: scripts/s3.lua scripts/lib/s3cli.lua
-- pgvault s3 ls / rm / cleanup against the S3 server (Ceph RGW).
local t = require "harness.testing"
local h = require "harness.env"
local s3 = require "pgvault.s3"
local s3h = require "harness.s3"
local s3proxy = require "harness.s3proxy"
local make_bucket = s3h.make_bucket

t.test("ls lists objects and prefixes; rm deletes one or a whole prefix", function()
  local bucket = make_bucket("wf-s3ls")
  local env = h.s3().env
  for _, k in ipairs({ "a/1.txt", "a/2.txt", "a/sub/3.txt", "b.txt" }) do
    t.eq(h.pgvault({ "upload", "-", "s3://" .. bucket .. "/" .. k }, { env = env, stdin = k }).code, 0)
  end
  local r = h.pgvault({ "s3", "ls", "s3://" .. bucket .. "/a/" }, { env = env })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "PRE a/sub/")
  t.match(r.stdout, "%s7 a/1%.txt")
  t.no_match(r.stdout, "3%.txt")
  r = h.pgvault({ "s3", "ls", "--recursive", "s3://" .. bucket .. "/" }, { env = env })
  t.eq(select(2, r.stdout:gsub("\n", "")), 4, r.stdout)
  r = h.pgvault({ "s3", "rm", "s3://" .. bucket .. "/b.txt" }, { env = env })
  t.eq(r.code, 0, r.stderr)
  r = h.pgvault({ "s3", "rm", "--recursive", "--dry-run", "s3://" .. bucket .. "/a/" }, { env = env })
  t.match(r.stdout, "would delete s3://wf%-s3ls/a/sub/3%.txt")
  r = h.pgvault({ "s3", "rm", "--recursive", "s3://" .. bucket .. "/a/" }, { env = env })
  t.eq(r.code, 0, r.stderr)
  r = h.pgvault({ "s3", "ls", "--recursive", "s3://" .. bucket .. "/" }, { env = env })
  t.eq(r.stdout, "")
  r = h.pgvault({ "s3", "frobnicate", "s3://" .. bucket .. "/" }, { env = env })
  t.eq(r.code, 2)
  -- an option the subcommand would ignore is refused
  for _, c in ipairs({ { "ls", "--dry-run" }, { "ls", "--older-than", "2" }, { "rm", "--older-than", "2" },
    { "cleanup", "--recursive" } }) do
    local argv = { "s3", table.unpack(c) }
    argv[#argv + 1] = "s3://" .. bucket .. "/"
    r = h.pgvault(argv, { env = env })
    t.eq(r.code, 2, table.concat(c, " "))
    t.match(r.stderr, "%-%-" .. c[2]:sub(3):gsub("%-", "%%-") .. " does not apply to 's3 " .. c[1] .. "'")
  end
end)

t.test("cleanup aborts stale multipart uploads and keeps newer ones", function()
  local bucket = make_bucket("wf-cleanup")
  local c <close> = s3.client(s3h.direct())
  for _, key in ipairs({ "backups/x1", "backups/x2", "other/y" }) do
    c:create_upload("s3://" .. bucket .. "/" .. key)
  end
  local env = s3h.env()
  local r = h.pgvault({ "s3", "cleanup", "s3://" .. bucket .. "/backups/" }, { env = env })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "aborted 0 stale multipart uploads; 2 newer ones kept")
  r = h.pgvault({ "s3", "cleanup", "--older-than", "0", "--dry-run", "s3://" .. bucket .. "/backups/" }, { env = env })
  t.match(r.stdout, "would abort s3://wf%-cleanup/backups/x1")
  t.eq(#s3h.open_uploads(bucket), 3, "dry run aborts nothing")
  r = h.pgvault({ "s3", "cleanup", "--older-than", "0", "s3://" .. bucket .. "/backups/" }, { env = env })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "aborted 2 stale")
  local open = s3h.open_uploads(bucket)
  t.eq(#open, 1)
  t.eq(open[1].key, "other/y", "outside the prefix: kept")
end)

t.test("rm --recursive s3://b/x/prod deletes the folder x/prod/ only, as the aws CLI does", function()
  local bucket = make_bucket("wf-s3rm")
  local env = s3h.env()
  local keys = { "x/prod/a.txt", "x/prod/sub/b.txt", "x/prod-old.txt", "x/production/c.txt", "x/prod" }
  for _, k in ipairs(keys) do s3.put("s3://" .. bucket .. "/" .. k, k, s3h.direct()) end
  local r = h.pgvault({ "s3", "rm", "--recursive", "--dry-run", "s3://" .. bucket .. "/x/prod" }, { env = env })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, "would delete s3://wf-s3rm/x/prod/a.txt\nwould delete s3://wf-s3rm/x/prod/sub/b.txt\n")
  t.match(r.stderr, "would delete 2 objects in s3://wf%-s3rm/x/prod/")
  t.eq(#s3h.keys(bucket, "x/"), 5, "a dry run deletes nothing")
  r = h.pgvault({ "s3", "rm", "--recursive", "s3://" .. bucket .. "/x/prod" }, { env = env })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, "delete s3://wf-s3rm/x/prod/a.txt\ndelete s3://wf-s3rm/x/prod/sub/b.txt\n", "what it says it deletes")
  t.eq(s3h.keys(bucket, "x/"), { "x/prod", "x/prod-old.txt", "x/production/c.txt" }, "the neighbours stay")
end)

t.test("cleanup acts on the object or its folder, never on a neighbour sharing the prefix", function()
  local bucket = make_bucket("wf-cleanup-folder")
  local c <close> = s3.client(s3h.direct())
  for _, key in ipairs({ "p/prod/x1", "p/prod", "p/production/y", "p/prod-old" }) do
    c:create_upload("s3://" .. bucket .. "/" .. key)
  end
  local r = h.pgvault({ "s3", "cleanup", "--older-than", "0", "s3://" .. bucket .. "/p/prod" }, { env = s3h.env() })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stderr, "aborted 2 stale multipart uploads; 0 newer ones kept")
  local left = {}
  for _, u in ipairs(s3h.open_uploads(bucket)) do left[#left + 1] = u.key end
  table.sort(left)
  t.eq(left, { "p/prod-old", "p/production/y" })
end)

t.test("cleanup against a server without ListMultipartUploads (501) fails at once, one line", function()
  local bucket = make_bucket("wf-cleanup-501")
  local proxy <close> = s3proxy.start()
  proxy:rules({ { op = "ListMultipartUploads", action = "error", status = 501, code = "NotImplemented",
    message = "not implemented" } })
  local r = h.pgvault({ "s3", "cleanup", "s3://" .. bucket .. "/" }, { env = proxy:env() })
  t.eq(r.code, 1, r.stderr)
  t.match(r.stderr, "ListMultipartUploads s3://wf%-cleanup%-501/ failed: HTTP 501 NotImplemented")
  t.eq(proxy:stats().ops.ListMultipartUploads, 1, "not retried: a 501 never changes")
  t.eq(select(2, r.stderr:gsub("\n", "")), 1, "one line: " .. r.stderr)
end)
