-- covers: host/log.c host/redact.c
-- Logging and redaction: no secret reaches stderr, whatever its shape.
local t = require "harness.testing"
local h = require "harness.env"
local pgvault = require "pgvault"

local cases = {
  { "postgresql://app:s3cr3t-pw@db.example.com:5432/app", "postgresql://app:***@db.example.com:5432/app" },
  { "host=db user=app password=s3cr3t dbname=x", "host=db user=app password=*** dbname=x" },
  { "host=db password='with space' dbname=x", "host=db password='***' dbname=x" },
  { "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "AWS_SECRET_ACCESS_KEY=***" },
  { "aws_secret_access_key = wJalrXUtnFEMI", "aws_secret_access_key = ***" },
  { "AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQG",
    "AGE-SECRET-KEY-1***" },
  { "Authorization: Bearer napi_abcdef123456", "Authorization: Bearer ***" },
  { "Authorization: FlyV1 fm2_lJPECAAAAAAAA", "Authorization: FlyV1 ***" },
  { '{"api_key":"abc123xyz","name":"n"}', '{"api_key":"***","name":"n"}' },
  { "plain text with no secrets: s3://bucket/key", "plain text with no secrets: s3://bucket/key" },
}

t.test("redaction of URLs, conninfo, keys and tokens", function()
  for _, c in ipairs(cases) do
    t.eq(pgvault.redact(c[1]), c[2], c[1])
  end
end)

t.test("registered secrets are masked in log lines", function()
  local r = h.pgvault({ "-e", "log.secret('topsecretvalue'); log.warn('the value is %s!', 'topsecretvalue')" })
  t.eq(r.stderr, "pgvault: warning: the value is ***!\n")
end)

t.test("levels: -q hides info, -v shows debug", function()
  local code = "log.debug('d'); log.info('i'); log.warn('w'); log.error('e')"
  t.eq(h.pgvault({ "-e", code }).stderr,
    "pgvault: info: i\npgvault: warning: w\npgvault: error: e\n", "default")
  t.eq(h.pgvault({ "-q", "-e", code }).stderr, "pgvault: warning: w\npgvault: error: e\n", "quiet")
  t.match(h.pgvault({ "-v", "-e", code }).stderr, "^pgvault: debug: d\n", "verbose")
end)

t.test("a failing script's error line is redacted", function()
  local r = h.pgvault({ "-e", "error('cannot reach postgres://u:pa55word@h/db')" })
  t.no_match(r.stderr, "pa55word")
  t.match(r.stderr, "postgres://u:%*%*%*@h/db")
end)

t.test("the redaction fuzz corpus replays cleanly", function()
  local fs = require "pgvault.fs"
  local dir = "tests/fuzz/redact_corpus"
  local names = fs.listdir(dir)
  t.ok(#names >= 2, "corpus present")
  for _, name in ipairs(names) do
    local out = pgvault.redact(fs.read_file(dir .. "/" .. name))
    t.eq(type(out), "string", name)
    t.no_match(out, "password=x", name)
  end
end)
