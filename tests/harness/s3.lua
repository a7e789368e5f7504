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

-- Certificates made with openssl in dir: a test CA (ca.pem) and a server
-- certificate for 127.0.0.1 it signed (server.pem, server.key); with
-- opts.expired the server certificate's validity ended in 2020. Returns
-- {cert=, key=, ca=} as s3proxy.start{tls=} takes it, plus other_ca, a CA
-- that signed nothing here (a wrong CA).
function M.tls(dir, opts)
  local script = [[
set -e
cd "$1"
q() { "$@" >/dev/null 2>&1 || { "$@"; exit 1; }; }
q openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=pgvault test CA"
q openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.pem -days 2 -subj "/CN=another CA"
q openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=127.0.0.1"
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > ext.cnf
if [ "$2" = expired ]; then
  mkdir -p db && : > db/index && echo 01 > db/serial
  printf '[ca]\ndefault_ca=c\n[c]\ndatabase=db/index\nserial=db/serial\nnew_certs_dir=db\n' > ca.cnf
  printf 'default_md=sha256\npolicy=p\ncopy_extensions=copy\n[p]\ncommonName=supplied\n' >> ca.cnf
  q openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in server.csr -out server.pem \
    -startdate 20200101000000Z -enddate 20200102000000Z -extfile ext.cnf
else
  q openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 \
    -extfile ext.cnf
fi
]]
  local r = h.run({ "sh", "-c", script, "sh", dir, opts and opts.expired and "expired" or "valid" })
  assert(r.code == 0, "openssl: " .. r.stdout .. r.stderr)
  return { cert = dir .. "/server.pem", key = dir .. "/server.key", ca = dir .. "/ca.pem",
    other_ca = dir .. "/other.pem" }
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
