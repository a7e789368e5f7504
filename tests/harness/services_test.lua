-- covers: tests/harness/services.lua
-- The harness's own services answer: PostgreSQL 15 with password auth and
-- en_US.UTF-8 collation versions, and an S3 server (Ceph RGW) that checks
-- signatures and keeps multipart uploads until they are aborted.
local t = require "harness.testing"
local h = require "harness.env"
local s3h = require "harness.s3"
local s3 = require "pgvault.s3"

t.test("PostgreSQL 15 answers the test role over TCP with a password", function()
  local pg = h.pg()
  local out = h.psql(pg.url("postgres"), "SELECT current_user, current_setting('server_version_num')::int / 10000;")
  t.eq(out, "pgvault_test|15\n")
end)

t.test("the test role is refused with a wrong password", function()
  local pg = h.pg()
  local url = pg.url("postgres"):gsub(":[^:@/]+@", ":wrong@")
  t.raises(function() h.psql(url, "SELECT 1") end, "password authentication failed")
end)

t.test("databases get en_US.UTF-8 with a collation version", function()
  local url = h.createdb("harness_smoke")
  local out = h.psql(url, "SELECT datcollate, datcollversion IS NOT NULL FROM pg_database"
    .. " WHERE datname = current_database();")
  t.eq(out, "en_US.UTF-8|t\n")
  h.dropdb("harness_smoke")
end)

t.test("the S3 server stores and returns objects for the right key", function()
  local bucket = h.make_bucket("harness-smoke")
  local d = h.tmpdir()
  h.write(d .. "/obj", "hello s3")
  local r = h.aws({ "s3", "cp", d .. "/obj", "s3://" .. bucket .. "/dir/obj" })
  t.eq(r.code, 0, "upload: " .. r.stderr)
  r = h.aws({ "s3", "cp", "s3://" .. bucket .. "/dir/obj", d .. "/back" })
  t.eq(r.code, 0, "download: " .. r.stderr)
  t.eq(h.read(d .. "/back"), "hello s3")
end)

t.test("the S3 server refuses a wrong secret key (it checks SigV4)", function()
  h.make_bucket("harness-smoke")
  -- the aws CLI (2.9) cannot print RGW's errors, whose Message is empty
  local r = h.aws({ "s3api", "list-objects-v2", "--bucket", "harness-smoke" },
    { env = { AWS_SECRET_ACCESS_KEY = "not-the-secret" } })
  t.neq(r.code, 0, "exit code")
  t.raises(function() s3.list("s3://harness-smoke/", s3h.direct({ secret_access_key = "not-the-secret" })) end,
    "SignatureDoesNotMatch")
end)

t.test("the S3 server lists unfinished multipart uploads until they are aborted", function()
  local bucket = s3h.make_bucket("harness-uploads")
  local c <close> = s3.client(s3h.direct())
  local id = c:create_upload("s3://" .. bucket .. "/k")
  local open = s3h.open_uploads(bucket)
  t.eq(#open, 1)
  t.eq(open[1].upload_id, id)
  t.eq(c:abort_upload("s3://" .. bucket .. "/k", id), true)
  t.eq(#s3h.open_uploads(bucket), 0)
end)

t.test("a user of the S3 server can be suspended and reinstated (radosgw-admin)", function()
  local user, opts = s3h.new_user("harness-admin")
  t.eq(s3.create_bucket("s3://harness-admin", opts), true)
  t.eq(s3h.admin({ "user", "info", "--uid", user.uid }).keys[1].access_key, user.access_key)
  s3h.admin({ "user", "suspend", "--uid", user.uid })
  local ok, err = pcall(s3.list, "s3://harness-admin/", opts)
  s3h.admin({ "user", "enable", "--uid", user.uid })
  t.eq(ok, false, "refused while suspended")
  t.match(tostring(err), "refused")
  t.eq(#s3.list("s3://harness-admin/", opts), 0, "answers again")
end)
