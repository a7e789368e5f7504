-- covers: tests/harness/services.lua
-- The harness's own services answer: PostgreSQL 15 with password auth and
-- en_US.UTF-8 collation versions, and an S3 server that checks signatures.
local t = require "harness.testing"
local h = require "harness.env"

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
  local r = h.aws({ "s3", "ls", "s3://harness-smoke/" }, { env = { AWS_SECRET_ACCESS_KEY = "not-the-secret" } })
  t.neq(r.code, 0, "exit code")
  t.match(r.stderr, "SignatureDoesNotMatch")
end)
