-- What the S3 tests share: options for a client that talks straight to the
-- suite's RADOS Gateway, buckets, the server's own view of unfinished
-- multipart uploads (ListMultipartUploads), files of random bytes and
-- their digests, and radosgw-admin for the tests that change the user.
local h = require "harness.env"
local rgw = require "harness.rgw"
local s3 = require "pgvault.s3"
local stream = require "pgvault.stream"

local M = {}

-- Options for an in-process client of the server itself (no proxy).
function M.direct(extra)
  local c = h.s3()
  local o = { endpoint_url = c.endpoint, region = c.region, access_key_id = c.access_key,
    secret_access_key = c.secret_key }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- Environment for a pgvault child: the test keys and endpoint, plus extra
-- (false removes a variable).
function M.env(extra)
  local e = {}
  for k, v in pairs(h.s3().env) do e[k] = v end
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

-- Creates the bucket (pgvault itself: far quicker than the aws CLI);
-- one that is already ours is fine.
function M.make_bucket(name)
  s3.create_bucket("s3://" .. name, M.direct())
  return name
end

-- Multipart uploads the server still holds under s3://bucket/prefix.
function M.open_uploads(bucket, prefix)
  return s3.uploads("s3://" .. bucket .. "/" .. (prefix or ""), M.direct())
end

-- Keys under s3://bucket/prefix, sorted.
function M.keys(bucket, prefix)
  local out = {}
  for _, o in ipairs(s3.list("s3://" .. bucket .. "/" .. (prefix or ""), M.direct())) do out[#out + 1] = o.key end
  table.sort(out)
  return out
end

function M.make_file(path, bytes)
  local r = h.run({ "sh", "-c", string.format("head -c %d /dev/urandom > '%s'", bytes, path) })
  assert(r.code == 0, r.stderr)
  return path
end

function M.file_sha256(path)
  return stream.run { stream.file_reader(path), stream.sha256(), stream.discard() }.sha256.sha256
end

-- radosgw-admin on the suite's cluster: M.admin{ "user", "suspend", "--uid", M.user() }.
function M.admin(args)
  return rgw.admin(h.s3(), args)
end

-- A user of its own (for tests that suspend or re-key it: the suite's
-- user is shared by the test files running at the same time). Returns
-- {uid=, access_key=, secret_key=} and options for a client as that user.
function M.new_user(uid)
  local u = M.admin({ "user", "create", "--uid", uid, "--display-name", uid })
  local user = { uid = uid, access_key = u.keys[1].access_key, secret_key = u.keys[1].secret_key }
  return user, M.direct({ access_key_id = user.access_key, secret_access_key = user.secret_key })
end

return M
