-- The S3 rows of the fault matrix (format: tests/faults/matrix.lua): a
-- backup streaming into a bucket and a restore streaming out of one,
-- against the suite's RADOS Gateway, the faults injected by the proxy in
-- front of it, by the certificates it serves, by the clock (faketime), by
-- the name of the endpoint, or by radosgw-admin.
local fs = require "pgvault.fs"
local s3h = require "harness.s3"
local s3proxy = require "harness.s3proxy"
local proc = require "pgvault.proc"
local s3 = require "pgvault.s3"
local t = require "harness.testing"

local function add(list, ...)
  for _, v in ipairs({ ... }) do list[#list + 1] = v end
end

-- The proxy serves HTTPS with these certificates; ca = the bundle given.
local function tls(ctx, which)
  local dir = ctx.tmp .. "/../certs-" .. which
  fs.mkdir_p(dir)
  local certs = s3h.tls(dir, { expired = which == "expired" })
  ctx.tls_proxy = s3proxy.start({ tls = certs })
  ctx.endpoint = ctx.tls_proxy.endpoint
  ctx.ca = which == "wrong" and certs.other_ca or certs.ca
end

-- A user of the row's own, whose keys the row revokes; for a restore, the
-- backup is copied into a bucket of that user first.
local function own_user(ctx, n)
  local user, opts = s3h.new_user("faults-revoked-" .. n)
  ctx.user, ctx.access_key, ctx.secret_key = user, user.access_key, user.secret_key
  local bucket = "faults-revoked-" .. n
  s3.create_bucket("s3://" .. bucket, opts)
  ctx.s3 = opts
  ctx.prefix = "s3://" .. bucket .. "/p/"
  if ctx.backup then
    local src_bucket = ctx.backup:match("^s3://([^/]+)/")
    for _, o in ipairs(s3.list((ctx.backup:gsub("latest$", "")), s3h.direct())) do
      s3.put(ctx.prefix .. o.key:match("[^/]+$"), s3.get("s3://" .. src_bucket .. "/" .. o.key, s3h.direct()), opts)
    end
    ctx.backup = ctx.prefix .. "latest"
  end
end

local function revoke_when(pred)
  return function(ctx, _)
    local deadline = proc.now() + 60
    while not pred(ctx) and proc.now() < deadline do proc.sleep(0.05) end
    s3h.admin({ "user", "suspend", "--uid", ctx.user.uid })
  end
end

local RETRIED = "retried with backoff (a download resumes with a Range on the same ETag); the backup is stored "
  .. "whole, the restore completes"
local GIVES_UP = "exit 1 after `--retries` attempts, one line naming the request; no object under a final name, no "
  .. "manifest, no multipart upload left (the upload is aborted), the live database untouched, nothing local"
local TLS = "exit 1 at once, \"cannot connect securely … certificate has expired\" (or the CA problem)"
local REVOKED_UPLOAD = "exit 1 at once (\"refused … InvalidAccessKeyId/AccessDenied\", naming the key id); nothing "
  .. "under a final name; the upload and the name's reservation (`.STAMP_SUFFIX.reserved`) cannot be removed with "
  .. "those keys: the log says so, `pgvault s3 cleanup` with valid keys removes the upload and the next `prune` "
  .. "(once past `--grace`) both"
local REVOKED_RESTORE = "exit 1 at once; the live database untouched, no other database left"

local rows = {}
local revoked = 0

for _, op in ipairs({ "backup_bucket", "restore_bucket" }) do
  local data = op == "backup_bucket" and "UploadPart" or "GetObject"
  add(rows,
    { op = op, fault = "503 SlowDown burst", at = data, outcome = "completes", short = true, holds = RETRIED,
      setup = function(ctx) ctx.proxy:rules({ { op = data, action = "status503", count = 3, retry_after = 0 } }) end,
      check = function(ctx) t.eq(ctx.proxy:stats().injected, 3, "three refused") end },
    { op = op, fault = "500 burst on every kind of request", at = "any", outcome = "completes", holds = RETRIED,
      setup = function(ctx)
        ctx.proxy:rules({ { op = "*", action = "status500", rate = 0.3, count = 4,
          except = { "AbortMultipartUpload" } } })
      end },
    { op = op, fault = "503 SlowDown without end", at = data, outcome = "fails",
      message = data .. " [^ ]+ failed after 3 attempts: HTTP 503 SlowDown", short = op == "backup_bucket",
      holds = GIVES_UP,
      setup = function(ctx)
        ctx.proxy:rules({ { op = data, action = "status503", retry_after = 0 } })
        add(ctx.args, "--retries", "3")
      end },
    { op = op, fault = "connection reset mid-body", at = data, outcome = "completes", short = true, holds = RETRIED,
      setup = function(ctx) ctx.proxy:rules({ { op = data, action = "reset", count = 2 } }) end },
    { op = op, fault = "connection reset on every attempt", at = data, outcome = "fails",
      message = "failed after 3 attempts", holds = GIVES_UP,
      setup = function(ctx)
        ctx.proxy:rules({ { op = data, action = "reset" } })
        add(ctx.args, "--retries", "3")
      end },
    { op = op, fault = "a server that stops answering", at = data, outcome = "fails",
      message = data .. " [^ ]+ failed after 2 attempts: Operation too slow", short = op == "restore_bucket",
      holds = "each attempt ends after `--timeout` seconds without progress; then exit 1 as above",
      setup = function(ctx)
        ctx.proxy:rules({ { op = data, action = "hang" } })
        add(ctx.args, "--timeout", "2", "--retries", "2")
      end },
    { op = op, fault = "clock an hour behind (RequestTimeTooSkewed from RGW)", at = "every request",
      outcome = "completes", short = op == "backup_bucket",
      holds = "the server's `Date` corrects the clock, with a warning; completes",
      setup = function(ctx) ctx.wrap = { "faketime", "-f", "-1h" } end,
      check = function(_, r) t.match(r.stderr, "off the server's clock; using the server's time") end },
    { op = op, fault = "DNS failure", at = "the endpoint's name", outcome = "fails",
      message = "failed after 2 attempts: Could not resolve host", short = op == "restore_bucket",
      holds = "exit 1 after `--retries` attempts: \"Could not resolve host\"; nothing left",
      setup = function(ctx)
        ctx.endpoint = "http://pgvault-faults.invalid:9000"
        add(ctx.args, "--retries", "2")
      end },
    { op = op, fault = "a certificate from another CA", at = "TLS", outcome = "fails",
      message = "cannot connect securely to https://127%.0%.0%.1:%d+: SSL certificate problem",
      short = op == "backup_bucket", holds = TLS, setup = function(ctx) tls(ctx, "wrong") end,
      check = function(ctx) ctx.tls_proxy:close() end },
    { op = op, fault = "an expired certificate", at = "TLS", outcome = "fails",
      message = "cannot connect securely .*certificate has expired", short = op == "restore_bucket", holds = TLS,
      setup = function(ctx) tls(ctx, "expired") end, check = function(ctx) ctx.tls_proxy:close() end },
    { op = op, fault = "credentials revoked mid-" .. (op == "backup_bucket" and "upload" or "restore"),
      at = data, outcome = "fails", message = "refused", leaves_upload = op == "backup_bucket",
      short = true, holds = op == "backup_bucket" and REVOKED_UPLOAD or REVOKED_RESTORE,
      setup = function(ctx)
        revoked = revoked + 1
        own_user(ctx, revoked)
        -- slow data requests, so that the keys go while they are under way
        ctx.proxy:rules({ { op = data, action = "slow", ms = 1500 } })
      end,
      during = revoke_when(function(ctx) return (ctx.proxy:stats().ops[data] or 0) >= 1 end),
      after = function(ctx) s3h.admin({ "user", "enable", "--uid", ctx.user.uid }) end }
  )
end

-- A damaged body: only uploads carry one.
add(rows,
  { op = "backup_bucket", fault = "a body damaged in transit (RGW's digest check)", at = "UploadPart",
    outcome = "completes", short = true, holds = RETRIED,
    setup = function(ctx)
      ctx.proxy:rules({ { op = "UploadPart", action = "corrupt", upstream = true, count = 2 } })
    end },
  { op = "backup_bucket", fault = "every body damaged in transit", at = "UploadPart", outcome = "fails",
    message = "UploadPart [^ ]+ failed after 3 attempts: HTTP 400 ", holds = GIVES_UP,
    check = function(_, r)
      t.ok(r.stderr:find("BadDigest") or r.stderr:find("XAmzContentSHA256Mismatch"), "the server's digest check")
    end,
    setup = function(ctx)
      ctx.proxy:rules({ { op = "UploadPart", action = "corrupt", upstream = true } })
      add(ctx.args, "--retries", "3")
    end }
)

-- A prune of a bucket: its deletions, manifests first.
add(rows,
  { op = "prune_bucket", fault = "503 SlowDown burst", at = "DeleteObjects", outcome = "completes",
    holds = "retried with backoff; the prune completes",
    setup = function(ctx)
      ctx.proxy:rules({ { op = "DeleteObjects", action = "status503", count = 2, retry_after = 0 } })
    end },
  { op = "prune_bucket", fault = "503 SlowDown without end", at = "DeleteObjects", outcome = "fails",
    message = "DeleteObjects [^ ]+ failed after 3 attempts: HTTP 503 SlowDown", short = true,
    holds = "exit 1 after `--retries` attempts; nothing removed (the manifests go first: a prune stopped later "
      .. "never leaves a manifest without its archive), the lock released",
    setup = function(ctx)
      ctx.proxy:rules({ { op = "DeleteObjects", action = "status503", retry_after = 0 } })
      add(ctx.args, "--retries", "3")
    end }
)

return rows
