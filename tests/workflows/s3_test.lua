-- covers: scripts/s3.lua scripts/lib/s3cli.lua
-- pgvault s3 ls / rm / cleanup against the S3 server (Ceph RGW).
local t = require "harness.testing"
local h = require "harness.env"
local s3 = require "pgvault.s3"
local s3h = require "harness.s3"
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
