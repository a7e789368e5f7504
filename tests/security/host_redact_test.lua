-- covers: host/redact.c host/log.c host/error.c
-- Issue 11: redaction of the whole class of secrets, in pgvault.redact, log
-- lines and error messages. Regression tests: on the old code the cases
-- marked "old" passed through unmasked.
local t = require "harness.testing"
local h = require "harness.env"
local pgvault = require "pgvault"

local PQ = "AGE-SECRET-KEY-PQ-1QGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQ"

-- { input, expected output, secret that must not appear }
local cases = {
  -- age identities in any case and form (old: lowercase and PQ leaked)
  { "key AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQG here",
    "key AGE-SECRET-KEY-1*** here", "QYQSZQGP" },
  { "key " .. PQ, "key AGE-SECRET-KEY-PQ-1***", "QGPQYQSZ" },
  { "age-secret-key-1qyqszqgpqyqszqgpqyqszqgpqyqszqgp", "age-secret-key-1***", "qyqszqgp" },
  { "Age-Secret-Key-Pq-1qyqszqgpqyqszqgp", "Age-Secret-Key-Pq-1***", "qyqszqgp" },
  { "AGE-PLUGIN-YUBIKEY-1QYQSZQGPQYQSZQGP", "AGE-PLUGIN-YUBIKEY-1***", "QYQSZQGP" },
  -- key = value with tabs or escaped spaces (old: leaked)
  { "password\t=\tsecret-tab", "password\t=\t***", "secret-tab" },
  { "host=db password=a\\ b\\ c dbname=x", "host=db password=*** dbname=x", "b\\ c" },
  { "password=a,b;c and token=x; use that, {secret=y}", "password=*** and token=***; use that, {secret=***}", "b;c" },
  { "password = 'it\\'s a b' x", "password = '***' x", "s a b" },
  { 'sslpassword="q\\"uoted" x', 'sslpassword="***" x', "uoted" },
  { '{"password":"x y","token": "t"}', '{"password":"***","token": "***"}', "x y" },
  -- authorization headers (old: the AWS signature leaked)
  { "Authorization: AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20250101/us-east-1/s3/aws4_request, "
    .. "SignedHeaders=host;x-amz-date, Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024",
    "Authorization: AWS4-HMAC-SHA256 ***", "fe5f80f7" },
  { "authorization:Bearer napi_abc", "authorization:Bearer ***", "napi_abc" },
  { '{"Authorization": "FlyV1 fm2_lJPECAAAAAAAA,fm2_other", "x": 1}', '{"Authorization": "FlyV1 ***", "x": 1}',
    "lJPEC" },
  { "Cookie: session=abc123; other=1", "Cookie: ***", "abc123" },
  { "X-Amz-Security-Token: FwoGZXIvYXdzEBYaDH", "X-Amz-Security-Token: ***", "FwoGZXIv" },
  { "GET /b/k?X-Amz-Credential=AK%2F&X-Amz-Signature=0123456789abcdef HTTP/1.1",
    "GET /b/k?X-Amz-Credential=AK%2F&X-Amz-Signature=*** HTTP/1.1", "0123456789abcdef" },
  -- bearer and Fly tokens (the Neon and Fly workflows send them)
  { "Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "Bearer ***", "eyJhbGci" },
  { "FlyV1 fm2_lJPECAAAAAAAA,fm2_xyz rest", "FlyV1 *** rest", "lJPEC" },
  { "token napi_0123456789abcdefghijklmnop", "token napi_***", "0123456789abcdef" },
  { "FLY_API_TOKEN=fm2_0123456789abcdefghij", "FLY_API_TOKEN=***", "0123456789" },
  -- URL passwords, also with an unescaped @ or / (old: the part after the first @ leaked)
  { "postgresql://app:s3cr3t@db:5432/x", "postgresql://app:***@db:5432/x", "s3cr3t" },
  { "postgresql://app:p@ss/w0rd@db:5432/x", "postgresql://app:***@db:5432/x", "w0rd" },
  { "https://user:tok@host/path?password=pw2&x=1", "https://user:***@host/path?password=***&x=1", "pw2" },
  { "postgresql://u:Pa55@S3cret@h/db", "postgresql://u:***@h/db", "S3cret" },
  { "postgresql://u:Sup3r/Tail@h/db", "postgresql://u:***@h/db", "Sup3r" },
  { "https://host/path?email=a@b.example", "https://host/path?email=a@b.example" },
  -- SQL that quotes a password (a server error can echo the statement)
  { "ALTER ROLE app PASSWORD 'hunter2'", "ALTER ROLE app PASSWORD '***'", "hunter2" },
  -- what must stay as it is
  { "https://host:8080/users/@me", "https://host:8080/users/@me" },
  { "signature: good (key RWQ...)", "signature: good (key RWQ...)" },
  { "the token expired; Bearer auth failed", "the token expired; Bearer auth failed" },
  { "s3://bucket/prefix/20250101_prod.backup.zst", "s3://bucket/prefix/20250101_prod.backup.zst" },
}

t.test("each case: the secret is masked, the rest kept", function()
  for _, c in ipairs(cases) do
    local out = pgvault.redact(c[1])
    t.eq(out, c[2], c[1])
    if c[3] then t.ok(not out:find(c[3], 1, true), "leaked: " .. c[1]) end
    t.eq(pgvault.redact(out), out, "redacting twice changes nothing: " .. c[1])
  end
end)

t.test("log lines and error messages from Lua and C are redacted the same way", function()
  local r = h.pgvault({ "-e", "log.warn(...); error(pgvault.error('io', ...))", PQ, "x" })
  t.eq(r.code, 1)
  t.eq(r.stderr, "pgvault: warning: AGE-SECRET-KEY-PQ-1***\npgvault: -e: AGE-SECRET-KEY-PQ-1***\n")
  r = h.pgvault({ "-e", "stream.run{ stream.file_reader(...), stream.discard() }",
    "/nonexistent/password\t=\tsecret-in-path" })
  t.eq(r.code, 1)
  t.ok(not r.stderr:find("secret-in-path", 1, true), r.stderr)
end)

t.test("log.tail keeps the last lines written, redacted", function()
  local r = h.pgvault({ "-e", [[
    log.capture(2)
    log.info("one"); log.debug("hidden at this level"); log.warn("two password=%s", "pw-123")
    log.error("three")
    return log.tail()]] })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, '{ "pgvault: warning: two password=***", "pgvault: error: three" }\n')
end)
