-- The fault matrix (issue 14): what pgvault does when the world breaks in
-- the middle of an operation. Each tests/faults/*_rows.lua returns a list
-- of rows; each tests/faults/*_faults_test.lua runs one of those files
-- (`make faults`: every row; `make test`: the rows marked short). The
-- operations are in tests/faults/ops_*.lua; README's table "What happens
-- when …" is rendered from the rows (matrix.readme_table) and
-- readme_faults_test.lua checks that it is.
--
-- A row is a table:
--   op       "backup_dir", "backup_bucket", "restore_dir", "restore_bucket",
--            "nightly", "prune", "prune_bucket"
--   fault    what goes wrong, in a few words
--   at       where it is injected ("UploadPart", "COPY of a table" ...)
--   outcome  "completes" (the fault is survived), "fails", "interrupted"
--            (SIGINT/SIGTERM: exit 130) or "killed" (SIGKILL: the next run
--            completes and sweeps what was left)
--   holds    what happens, for README (rows of one fault with the same
--            text share a line there)
--   code     the exit code (default: 0, 1, 130 or 137 by outcome)
--   message  a Lua pattern the one error line must match (when it fails)
--   signal   "INT", "TERM" or "KILL": sent at a random point of the run
--            (a seeded fraction of the operation's clean run; the seed is
--            printed, PGVAULT_FAULTS_SEED=N repeats it)
--   short    true: also run by `make test`
--   cluster  function(ctx): before the operation's own set-up, replace ctx.pg
--            (a cluster of the row's own, another role)
--   setup    function(ctx): inject the fault before the run: ctx.proxy:rules{},
--            ctx.args / ctx.env entries to add, ctx.endpoint or ctx.pg to
--            replace, ctx.wrap (a command the run goes through) ...
--   during   function(ctx, pid): act while the command runs
--   after    function(ctx): undo the fault before the checks
--   check    function(ctx, r): further assertions after the operation's own
--   cleanup  function(ctx): whatever the outcome, after the checks
--   leaves_upload  true: the fault makes clean-up impossible (the keys were
--            revoked): the upload and the name's reservation remain, and
--            `pgvault s3 cleanup` and the next prune remove them
-- ctx (one per row): name, tag (the rows file's), base (a directory of the
-- row's), dir (the command's working directory), tmp (its TMPDIR), target
-- (a directory destination), bucket and prefix (s3://bucket/row-N/),
-- proxy (an S3 fault proxy in front of the server, reset for the row),
-- endpoint (the proxy's), s3 (options for a direct client), args, env,
-- ca, access_key and secret_key (the command's), pg (the PostgreSQL
-- cluster the operation uses: the suite's, or a row's own); an
-- operation's prepare() and setup() add what they made.
--
-- Every row is checked for: the exit code; a failure says so in one line
-- (log lines aside) matching the pattern and holding no secret; nothing
-- left in the working directory or TMPDIR; and the operation's own
-- invariants (ops_*.lua), which after SIGKILL are checked once the next
-- run has completed.
local t = require "harness.testing"
local h = require "harness.env"
local s3h = require "harness.s3"
local s3proxy = require "harness.s3proxy"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"

local matrix = { operations = {} }

matrix.full = os.getenv("PGVAULT_FAULTS") == "full"
matrix.seed = math.tointeger(tonumber(os.getenv("PGVAULT_FAULTS_SEED") or "")) or (os.time() ~ proc.getpid())

matrix.CODES = { completes = 0, fails = 1, interrupted = 130, killed = 137 }

local prepared = {}
local proxy

function matrix.proxy()
  proxy = proxy or s3proxy.start()
  return proxy
end

-- A fraction in [0, 1) from the seed and a name: each row's own point,
-- whatever other rows ran before it.
function matrix.fraction(name)
  local x = matrix.seed ~ 0x5bd1e995
  for i = 1, #name do x = (x ~ name:byte(i)) * 0x100000001b3 end
  for _ = 1, 3 do x = x * 6364136223846793005 + 1442695040888963407 end
  return ((x >> 11) & ((1 << 53) - 1)) / (1 << 53)
end

-- Whether `name` in directory `dir` is a lock file (.pgvault-ENV.lock:
-- lib.lock's flock, whose file stays) that no process holds now.
function matrix.released_lock(dir, name)
  if not name:match("^%.pgvault%-.+%.lock$") then return false end
  local r = proc.run({ "flock", "--nonblock", "--shared", dir .. "/" .. name, "true" })
  t.eq(r.code, 0, dir .. "/" .. name .. ": the lock is released")
  return r.code == 0
end

-- The environment of a command: the keys, the endpoint (the proxy), the
-- region; nothing from the user's files.
local function base_env(ctx)
  local c = h.s3()
  return { AWS_ACCESS_KEY_ID = ctx.access_key or c.access_key, AWS_SECRET_ACCESS_KEY = ctx.secret_key or c.secret_key,
    AWS_ENDPOINT_URL = ctx.endpoint, AWS_REGION = c.region, AWS_DEFAULT_REGION = c.region, AWS_PROFILE = false,
    AWS_CA_BUNDLE = ctx.ca or false, AWS_CONFIG_FILE = "/nonexistent/pgvault-faults",
    AWS_SHARED_CREDENTIALS_FILE = "/nonexistent/pgvault-faults", TMPDIR = ctx.tmp, PGVAULT_CONFIG = false,
    PGVAULT_ENV = false }
end

-- The one error line of a failed command (log lines aside).
function matrix.error_lines(stderr)
  local errors = {}
  for l in (stderr or ""):gmatch("[^\n]+") do
    if not l:match("^pgvault: info: ") and not l:match("^pgvault: warning: ") and not l:match("^pgvault: debug: ")
      and not l:match("^pgvault: error: ") then
      errors[#errors + 1] = l
    end
  end
  return errors
end

-- Every process below pid (children, their children ...).
local function descendants(pid)
  local parent = {}
  for _, name in ipairs(fs.listdir("/proc")) do
    local p = math.tointeger(tonumber(name))
    if p then
      local ok, stat = pcall(fs.read_file, "/proc/" .. p .. "/stat")
      local ppid = ok and tonumber(stat:match("^%d+ %b() %S+ (%d+)"))
      if ppid then parent[p] = ppid end
    end
  end
  local out, frontier = {}, { [pid] = true }
  local grew = true
  while grew do
    grew = false
    for p, pp in pairs(parent) do
      if frontier[pp] and not frontier[p] then
        frontier[p], grew = true, true
        out[#out + 1] = p
      end
    end
  end
  return out
end

-- Waits until the processes are gone (what SIGKILL orphaned ends on its
-- own: pg_dump on a closed pipe, pg_restore at the end of its input).
local function wait_gone(pids, seconds)
  local deadline = proc.now() + seconds
  for _, p in ipairs(pids) do
    while fs.exists("/proc/" .. p) and proc.now() < deadline do
      local ok, stat = pcall(fs.read_file, "/proc/" .. p .. "/stat")
      if ok and stat:match("^%d+ %b() Z") then break end
      proc.sleep(0.05)
    end
  end
end

-- Sends the row's signal at its point of the operation's clean run (a
-- fraction from 5% to 60% of the quickest clean run: a run that finished
-- before its point is checked as a completed one, and says so).
local function send_signal(ctx, row, handle)
  local point = 0.05 + 0.55 * matrix.fraction(ctx.key)
  local delay = point * matrix.clean_seconds(row.op)
  ctx.point = string.format("%.2f s (%.0f%% of a clean run)", delay, point * 100)
  local deadline = proc.now() + delay
  while proc.now() < deadline and handle:running() do proc.sleep(0.01) end
  if not handle:running() then
    ctx.finished_first = true
    return
  end
  local below = descendants(handle:pid())
  handle:kill(row.signal)
  if row.signal == "KILL" then
    handle:wait(60)
    wait_gone(below, 60)
  end
end

-- Runs the operation's command; a row with during, signal or wrap runs it
-- in the background.
function matrix.run_command(ctx, row, argv)
  for _, a in ipairs(ctx.args) do argv[#argv + 1] = a end
  local env = base_env(ctx)
  for k, v in pairs(ctx.env) do env[k] = v end
  if not (row and (row.during or row.signal)) and not ctx.wrap then
    return h.pgvault(argv, { env = env, cwd = ctx.dir, timeout = 300 })
  end
  local out, err = ctx.base .. "/command.out", ctx.base .. "/command.err"
  local argv_sh = { "sh", "-c", 'cd "$0" && exec "$@" >"$PGV_OUT" 2>"$PGV_ERR"', ctx.dir }
  for _, a in ipairs(ctx.wrap or {}) do argv_sh[#argv_sh + 1] = a end
  argv_sh[#argv_sh + 1] = h.bin
  for _, a in ipairs(argv) do argv_sh[#argv_sh + 1] = a end
  env.PGV_OUT, env.PGV_ERR = out, err
  argv_sh.env = env
  local handle = proc.spawn(argv_sh)
  if row.during then row.during(ctx, handle:pid()) end
  if row.signal then send_signal(ctx, row, handle) end
  local code = handle:wait(300)
  handle:close()
  return { code = code, stdout = h.read(out), stderr = h.read(err) }
end

-- The outcome the checks expect: a signal that came after the end finds
-- a completed run.
function matrix.outcome(ctx, row)
  if ctx.finished_first then return "completes" end
  return row.outcome
end

local function common_checks(ctx, row, r)
  local outcome = matrix.outcome(ctx, row)
  local want = (outcome == row.outcome and row.code) or matrix.CODES[outcome]
  t.eq(r.code, want, ctx.name .. ": exit code" .. (ctx.point and (", signal at " .. ctx.point) or "") .. "; "
    .. r.stderr)
  if outcome == "fails" or outcome == "interrupted" then
    local errs = matrix.error_lines(r.stderr)
    t.eq(#errs, 1, ctx.name .. ": one error line: " .. r.stderr)
    t.match(errs[1] or "", row.message or "interrupted", ctx.name .. ": the message")
  end
  t.no_match(r.stderr .. r.stdout, h.s3().secret_key, ctx.name .. ": no secret")
  t.no_match(r.stderr .. r.stdout, ctx.pg.password, ctx.name .. ": no password")
  t.eq(fs.listdir(ctx.dir), {}, ctx.name .. ": nothing left in the working directory")
  if outcome ~= "killed" then t.eq(fs.listdir(ctx.tmp), {}, ctx.name .. ": nothing left in TMPDIR") end
end

-- Once per process: what an operation needs before its rows.
function matrix.prepare(op)
  if not prepared[op] then prepared[op] = matrix.operations[op].prepare(matrix.tag) or {} end
  return prepared[op]
end

local clean = {}

-- Seconds a clean run of the operation takes here and now (measured once,
-- by the row "nothing goes wrong" that runs first).
function matrix.clean_seconds(op)
  return clean[op] or error("no clean run of " .. op .. " was measured")
end

local counter = 0

local function new_ctx(row)
  counter = counter + 1
  local ctx = { name = row.op .. "-" .. counter, op = row.op, key = row.op .. "|" .. row.fault .. "|" .. row.at,
    tag = matrix.tag,
    args = {}, env = {}, pg = h.pg(), cleanups = {} }
  for k, v in pairs(matrix.prepare(row.op)) do ctx[k] = v end
  ctx.bucket = s3h.make_bucket("faults-" .. matrix.tag)
  ctx.prefix = string.format("s3://%s/row-%d/", ctx.bucket, counter)
  ctx.s3 = s3h.direct()
  ctx.proxy = matrix.proxy()
  ctx.proxy:reset()
  ctx.endpoint = ctx.proxy.endpoint
  ctx.base = h.tmpdir()
  ctx.dir, ctx.tmp, ctx.target = ctx.base .. "/cwd", ctx.base .. "/tmp", ctx.base .. "/target"
  for _, d in ipairs({ ctx.dir, ctx.tmp, ctx.target }) do fs.mkdir_p(d) end
  return ctx
end

-- Registers clean-up that runs after the row, whatever happened.
function matrix.on_cleanup(ctx, fn) ctx.cleanups[#ctx.cleanups + 1] = fn end

local function run_row(row, op, ctx)
  if row.cluster then row.cluster(ctx) end
  if op.setup then op.setup(ctx, row) end
  -- (after the cluster's own clean-up is registered: runs before it)
  if op.cleanup then matrix.on_cleanup(ctx, op.cleanup) end
  if row.setup then row.setup(ctx) end
  local t0 = proc.now()
  local r = op.run(ctx, row)
  -- the quickest clean run so far: a loaded machine makes some slow
  if r.code == 0 and (row.fault == matrix.CLEAN or ctx.finished_first) then
    clean[row.op] = math.min(clean[row.op] or math.huge, proc.now() - t0)
  end
  ctx.proxy:rules({})
  if row.after then row.after(ctx) end
  common_checks(ctx, row, r)
  op.check(ctx, row, r)
  if row.check then row.check(ctx, r) end
  if matrix.outcome(ctx, row) == "killed" then op.after_kill(ctx, row) end
end

-- Runs one row as a test of its own.
function matrix.test(row)
  local op = matrix.operations[row.op] or error("no fault-matrix operation " .. tostring(row.op))
  t.test(string.format("%s: %s at %s %s", row.op, row.fault, row.at, row.outcome), function()
    local ctx = new_ctx(row)
    if row.cleanup then matrix.on_cleanup(ctx, row.cleanup) end
    local ok, err = pcall(run_row, row, op, ctx)
    for i = #ctx.cleanups, 1, -1 do
      local cok, cerr = pcall(ctx.cleanups[i], ctx)
      if ok and not cok then ok, err = false, cerr end
    end
    if ctx.point then
      io.stderr:write(string.format("fault matrix: %s: signal %s at %s%s\n", ctx.name, row.signal, ctx.point,
        ctx.finished_first and ": the run had finished" or ""))
    end
    if not ok then error(err, 0) end
  end)
end

-- The control row of an operation: nothing goes wrong. It runs before the
-- operation's other rows and times the clean run the signals are sent in.
matrix.CLEAN = "nothing goes wrong"
local function control(op)
  return { op = op, fault = matrix.CLEAN, at = "-", outcome = "completes",
    holds = "completes; the control row, which times the clean run" }
end

-- The rows of one file (tests/faults/NAME_rows.lua).
function matrix.rows(name)
  return dofile(h.root .. "/tests/faults/" .. name .. "_rows.lua")
end

-- Registers the rows of tests/faults/NAME_rows.lua for this mode, each
-- operation's control row first. Names the databases and buckets of this
-- file's rows after it, so that two files can run at once.
function matrix.load(name)
  matrix.tag = name
  io.stderr:write(string.format("fault matrix %s: seed %d (PGVAULT_FAULTS_SEED=%d repeats the signal points)\n",
    name, matrix.seed, matrix.seed))
  local selected, ops = {}, {}
  for _, row in ipairs(matrix.rows(name)) do
    if matrix.full or row.short then
      selected[#selected + 1] = row
      if not ops[row.op] then
        ops[row.op] = true
        matrix.test(control(row.op))
      end
    end
  end
  for _, row in ipairs(selected) do matrix.test(row) end
  t.teardown(function()
    for op in pairs(prepared) do
      if matrix.operations[op].teardown then matrix.operations[op].teardown(prepared[op]) end
    end
    if proxy then proxy:close() end
  end)
  return #selected
end

require "faults.ops_backup"(matrix)
require "faults.ops_restore"(matrix)
require "faults.ops_prune"(matrix)

return matrix
