-- The fault matrix (issue 14): what pgvault does when the world breaks in
-- the middle of an operation. `make faults` runs every row; `make test`
-- runs the rows marked short. tests/faults/faults_test.lua loads every
-- tests/faults/*_rows.lua (each returns a list of rows) and runs them.
--
-- A row is a table:
--   op       an operation below: "backup_bucket", "restore_bucket" (teams add
--            theirs to matrix.operations: backup_dir, nightly, prune ...)
--   fault    what goes wrong, in a few words (README's "What happens when")
--   at       where it is injected ("UploadPart", "GetObject", "mid-dump" ...)
--   outcome  "completes" (the fault is survived) or "fails"
--   code     the exit code (default 0 when it completes, 1 when it fails)
--   message  a Lua pattern the one error line must match (when it fails)
--   short    true: also run by `make test`
--   setup    function(ctx): inject the fault before the run: ctx.proxy:rules{},
--            ctx.args / ctx.env entries to add, ctx.endpoint to replace ...
--   during   function(ctx, pid): act while the command runs (revoke the keys,
--            send a signal); the command is started in the background then
--   after    function(ctx): undo the fault before the checks (reinstate keys)
--   check    function(ctx, r): further assertions after the operation's own
--   leaves_upload  true: the fault makes aborting impossible (the keys were
--            revoked): one unfinished upload must remain, and `pgvault s3
--            cleanup` with good keys removes it
-- ctx (one per row): name, bucket, prefix (s3://bucket/row-N/), proxy (an
-- S3 fault proxy in front of the server, reset for the row), endpoint (the
-- proxy's), s3 (options for a direct client), args, env, wrap (a command
-- the run goes through, as { "faketime", "-f", "-1h" }), ca, access_key and
-- secret_key (the command's), dir (its working directory), tmp (its
-- TMPDIR); an operation's prepare() adds what it made (the source
-- database, a backup to restore).
--
-- Every operation checks, whatever the row: the exit code; that a failure
-- says so in one line (log lines aside: info, warning, and error such as
-- "could not abort ...") naming the pattern; nothing partial locally (the working directory and TMPDIR
-- are empty); and its own invariants (below).
local t = require "harness.testing"
local h = require "harness.env"
local s3h = require "harness.s3"
local s3proxy = require "harness.s3proxy"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local s3 = require "pgvault.s3"

local matrix = { operations = {} }

matrix.full = os.getenv("PGVAULT_FAULTS") == "full"

local prepared = {}
local proxy

local function shared_proxy()
  proxy = proxy or s3proxy.start()
  proxy:reset()
  return proxy
end

-- The environment of a command: the keys, the endpoint (the proxy), the
-- region; nothing from the user's files.
local function base_env(ctx)
  local c = h.s3()
  return { AWS_ACCESS_KEY_ID = ctx.access_key or c.access_key, AWS_SECRET_ACCESS_KEY = ctx.secret_key or c.secret_key,
    AWS_ENDPOINT_URL = ctx.endpoint, AWS_REGION = c.region, AWS_DEFAULT_REGION = c.region, AWS_PROFILE = false,
    AWS_CA_BUNDLE = ctx.ca or false, AWS_CONFIG_FILE = "/nonexistent/pgvault-faults",
    AWS_SHARED_CREDENTIALS_FILE = "/nonexistent/pgvault-faults", TMPDIR = ctx.tmp }
end

local function lines(s)
  local out = {}
  for l in (s or ""):gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

-- The one error line of a failed command.
local function error_line(stderr)
  local errors = {}
  for _, l in ipairs(lines(stderr)) do
    if not l:match("^pgvault: info: ") and not l:match("^pgvault: warning: ") and not l:match("^pgvault: debug: ")
      and not l:match("^pgvault: error: ") then
      errors[#errors + 1] = l
    end
  end
  return errors
end

local function run_command(ctx, row, argv)
  for _, a in ipairs(ctx.args) do argv[#argv + 1] = a end
  local env = base_env(ctx)
  for k, v in pairs(ctx.env) do env[k] = v end
  if not row.during and not ctx.wrap then return h.pgvault(argv, { env = env, cwd = ctx.dir, timeout = 300 }) end
  local spec = {}
  for _, a in ipairs(ctx.wrap or {}) do spec[#spec + 1] = a end
  spec[#spec + 1] = h.bin
  local out, err = ctx.tmp .. "/../" .. ctx.name .. ".out", ctx.tmp .. "/../" .. ctx.name .. ".err"
  local argv_sh = { "sh", "-c", 'cd "$0" && exec "$@" >"$PGV_OUT" 2>"$PGV_ERR"', ctx.dir }
  for _, a in ipairs(spec) do argv_sh[#argv_sh + 1] = a end
  for _, a in ipairs(argv) do argv_sh[#argv_sh + 1] = a end
  env.PGV_OUT, env.PGV_ERR = out, err
  argv_sh.env = env
  local handle = proc.spawn(argv_sh)
  if row.during then row.during(ctx, handle:pid()) end
  local code = handle:wait(300)
  handle:close()
  return { code = code, stdout = h.read(out), stderr = h.read(err) }
end

local function common_checks(ctx, row, r)
  local want = row.code or (row.outcome == "completes" and 0 or 1)
  t.eq(r.code, want, ctx.name .. ": exit code; " .. r.stderr)
  if row.outcome == "fails" then
    local errs = error_line(r.stderr)
    t.eq(#errs, 1, ctx.name .. ": one error line: " .. r.stderr)
    t.match(errs[1] or "", row.message, ctx.name .. ": the message")
    t.no_match(r.stderr, h.s3().secret_key, ctx.name .. ": no secret")
  end
  t.eq(fs.listdir(ctx.dir), {}, ctx.name .. ": nothing left in the working directory")
  t.eq(fs.listdir(ctx.tmp), {}, ctx.name .. ": nothing left in TMPDIR")
end

-- Unfinished multipart uploads under the row's prefix, as the server
-- lists them.
local function open_uploads(ctx)
  return s3.uploads(ctx.prefix, ctx.s3)
end

-- Backup to a bucket -----------------------------------------------------------

matrix.operations.backup_bucket = {
  prepare = function()
    local db = h.createdb("faults_source_test")
    -- about 12 MB of data: several 5 MiB parts, compressed or not
    h.psql(db, "CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS note "
      .. "FROM generate_series(1, 150000) g;")
    return { source = db, rows = "150000\n" }
  end,
  run = function(ctx, row)
    return run_command(ctx, row, { "backup", "--db", ctx.source, "--to", ctx.prefix, "--suffix", "faults",
      "--compress", "none", "--part-size", "5", "--parallel", "2" })
  end,
  check = function(ctx, row, r)
    -- final names (what list, latest and restore see) and the dot names
    -- beside them (reservations, lib.naming)
    local keys, dots = {}, {}
    for _, o in ipairs(s3.list(ctx.prefix, ctx.s3)) do
      local name = o.key:match("[^/]+$")
      if name:sub(1, 1) == "." then dots[#dots + 1] = name else keys[#keys + 1] = name end
    end
    local uploads = open_uploads(ctx)
    if row.outcome == "completes" then
      t.eq(#keys, 2, ctx.name .. ": the archive and its manifest: " .. table.concat(keys, " "))
      local url = r.stdout:match("(s3://%S+)\n?$")
      local m = require("lib.manifest").decode(s3.get(url .. ".manifest.json", ctx.s3), url)
      local opts = { url = url }
      for k, v in pairs(ctx.s3) do opts[k] = v end
      local got = require("pgvault.stream").run { s3.reader(opts),
        require("pgvault.stream").sha256(), require("pgvault.stream").discard() }
      t.eq(got.sha256.sha256, m.stored.sha256, ctx.name .. ": stored whole")
    else
      t.eq(keys, {}, ctx.name .. ": no object under the final name, no manifest")
    end
    if row.leaves_upload then
      -- The keys went: neither the upload nor the name's reservation could
      -- be removed. `s3 cleanup` (as the message says) and the next prune
      -- sweep them.
      t.eq(#uploads, 1, ctx.name .. ": the upload the revoked keys could not abort")
      t.eq(#dots, 1, ctx.name .. ": the reservation the revoked keys could not remove")
      t.match(dots[1] or "", "^%.%d+_faults%.reserved$", ctx.name .. ": a reservation")
      t.match(r.stderr, "could not abort multipart upload .*; remove it with 'pgvault s3 cleanup s3://",
        ctx.name .. ": says so, and how to remove it")
      t.match(r.stderr, "warning: could not remove s3://%S+/%.%d+_faults%.reserved .*'pgvault prune' removes it",
        ctx.name .. ": and of the reservation")
      local env = s3h.env({ AWS_ACCESS_KEY_ID = ctx.access_key, AWS_SECRET_ACCESS_KEY = ctx.secret_key })
      local c = h.pgvault({ "s3", "cleanup", "--older-than", "0", ctx.prefix }, { env = env })
      t.eq(c.code, 0, c.stderr)
      uploads = open_uploads(ctx)
      c = h.pgvault({ "prune", ctx.prefix, "--grace", "0h" }, { env = env })
      t.eq(c.code, 0, c.stderr)
      t.match(c.stderr, "remove %.%d+_faults%.reserved %(stale reservation", ctx.name .. ": prune sweeps it")
      dots = {}
      for _, o in ipairs(s3.list(ctx.prefix, ctx.s3)) do dots[#dots + 1] = o.key end
    end
    t.eq(dots, {}, ctx.name .. ": no reservation left")
    t.eq(#uploads, 0, ctx.name .. ": no multipart upload left (ListMultipartUploads)")
  end,
}

-- Restore from a bucket ------------------------------------------------------------

matrix.operations.restore_bucket = {
  prepare = function()
    local src = matrix.prepare("backup_bucket")
    local bucket = s3h.make_bucket("faults-restore-source")
    local r = h.pgvault({ "backup", "--db", src.source, "--to", "s3://" .. bucket .. "/p/", "--suffix", "faults" },
      { env = s3h.env() })
    assert(r.code == 0, r.stderr)
    return { backup = "s3://" .. bucket .. "/p/latest", source = "faults_source_test", rows = src.rows }
  end,
  run = function(ctx, row)
    ctx.target = "faults_target_test"
    h.dropdb(ctx.target)
    return run_command(ctx, row, { "restore", ctx.backup, "--db", h.pg().url(ctx.target), "--database", ctx.source })
  end,
  check = function(ctx, row)
    local dbs = h.psql(h.pg().admin_url("postgres"), "SELECT datname FROM pg_database WHERE datname LIKE "
      .. "'faults_target_test%' ORDER BY 1;")
    if row.outcome == "completes" then
      t.eq(dbs, "faults_target_test\n", ctx.name .. ": the database, and nothing else")
      t.eq(h.psql(h.pg().url(ctx.target), "SELECT count(*) FROM t;"), ctx.rows, ctx.name .. ": every row")
    else
      t.eq(dbs, "", ctx.name .. ": no database created, none half-restored")
    end
    h.dropdb(ctx.target)
  end,
}

-- Once per run of the matrix: what an operation needs before its rows.
function matrix.prepare(op)
  if not prepared[op] then prepared[op] = matrix.operations[op].prepare() or {} end
  return prepared[op]
end

local counter = 0

-- Runs one row as a test of its own.
function matrix.test(row)
  local op = matrix.operations[row.op] or error("no fault-matrix operation " .. tostring(row.op))
  t.test(string.format("%s: %s at %s %s", row.op, row.fault, row.at, row.outcome), function()
    counter = counter + 1
    local ctx = { name = row.op .. "-" .. counter, args = {}, env = {} }
    for k, v in pairs(matrix.prepare(row.op)) do ctx[k] = v end
    ctx.bucket = s3h.make_bucket("faults")
    ctx.prefix = string.format("s3://%s/row-%d/", ctx.bucket, counter)
    ctx.s3 = s3h.direct()
    ctx.proxy = shared_proxy()
    ctx.endpoint = ctx.proxy.endpoint
    local base = h.tmpdir()
    ctx.dir, ctx.tmp = base .. "/cwd", base .. "/tmp"
    fs.mkdir_p(ctx.dir)
    fs.mkdir_p(ctx.tmp)
    if row.setup then row.setup(ctx) end
    local r = op.run(ctx, row)
    ctx.proxy:rules({})
    if row.after then row.after(ctx) end
    common_checks(ctx, row, r)
    op.check(ctx, row, r)
    if row.check then row.check(ctx, r) end
  end)
end

-- Registers the rows of every tests/faults/*_rows.lua for this mode.
function matrix.load(dir)
  local files = {}
  for _, name in ipairs(fs.listdir(dir)) do
    if name:match("_rows%.lua$") then files[#files + 1] = name end
  end
  table.sort(files)
  local n = 0
  for _, name in ipairs(files) do
    for _, row in ipairs(dofile(dir .. "/" .. name)) do
      if matrix.full or row.short then
        matrix.test(row)
        n = n + 1
      end
    end
  end
  return n
end

return matrix
