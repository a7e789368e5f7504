-- the nightly backup: lock, ping, back up, check the off-site copy, prune, restore drill, ping
local cli = require "lib.cli"
local config = require "lib.config"
local nightly = require "lib.nightly"
local notify = require "lib.notify"
local pgvault = require "pgvault"
local retention = require "lib.retention"
local s3cli = require "lib.s3cli"

local KEYS = { "db", "to", "suffix", "all_databases", "compress", "level", "pg_bin", "endpoint_url", "region",
  "profile", "ca_bundle", "part_size", "parallel", "retries", "timeout", "recipient", "recipients_file", "identity",
  "sign", "sign_password_file", "trust", "keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly",
  "keep_yearly", "keep_within", "keep_within_hourly", "keep_within_daily", "keep_within_weekly",
  "keep_within_monthly", "keep_within_yearly", "grace", "readback", "ping", "webhook", "webhook_secret",
  "drill_every", "drill_db", "lock_ttl" }
local options = config.options(KEYS)
options[#options + 1] = { "wait", nil, false, "wait for a running nightly of this environment instead of failing" }
options[#options + 1] = { "json", nil, false, "print the summary as one JSON object" }
local spec = {
  usage = "pgvault nightly [--env NAME] [--db URL --to DEST] [options]",
  summary = "The scheduled backup of an environment, step by step:\n"
    .. "  1. take the environment's lock (a second run says who holds it and exits 1, or --wait)\n"
    .. "  2. ping URL/start (healthchecks.io)\n"
    .. "  3. back up: pg_dump -> archive check -> zstd -> age -> upload -> signature (--sign) -> manifest\n"
    .. "  4. read the off-site copy back and verify it as 'pgvault verify s3://...' does, its signature\n"
    .. "     with --trust KEY.pub (default: the signing key's KEY.pub) (--no-readback skips it: on\n"
    .. "     Backblaze B2 downloads above the free allowance cost money)\n"
    .. "  5. prune by the keep rules (see 'pgvault prune --help')\n"
    .. "  6. on its schedule (--drill-every week: the first run of each week), restore the new backup\n"
    .. "     into a scratch database, compare row counts, drop it\n"
    .. "  7. ping URL (success) or URL/fail with the last 100 log lines; POST the summary to --webhook;\n"
    .. "     print a one-line summary (--json); exit 0 or 1.\n"
    .. "A failed step is reported and skips the steps that depend on it, never the pings, the summary\n"
    .. "or releasing the lock. Ctrl-C: exit 130, lock released, nothing partial left behind.",
  options = config.with_options(options),
}
local o = config.apply(cli.parse(arg, spec), spec)
local ping = notify.new(o)
local s3opts = s3cli.opts(o)
local run = nightly.new(o)
nightly.prepare(run, s3opts)
-- The lock goes with the run, however it ends (an error, Ctrl-C).
local held
local release <close> = setmetatable({}, { -- luacheck: ignore release
  __close = function() if held then held:release() end end })

run:procedure(function()
  -- 1. One run at a time for this environment.
  run:step("lock", function()
    held = nightly.lock(run, s3opts, { wait = o.wait, ttl = o.lock_ttl and retention.seconds(o.lock_ttl, "lock-ttl") })
  end)

  -- 2. "Started": the monitor measures the run from here.
  if run:ok("lock") then ping:start() end

  -- 3. The backup.
  run:step("backup", function() return nightly.backup(run, s3opts) end,
    function(r) return r:blocked("lock") end)

  -- 4. The off-site copy, read back.
  run:step("read-back", function() return nightly.readback(run, s3opts) end, function(r)
    if not o.readback then return "--no-readback" end
    if not r.remote then return "the destination is a directory, not off-site" end
    return r:blocked("backup")
  end)

  -- 5. Old backups go (not while the new one is in doubt).
  run:step("prune", function() return nightly.prune(run, s3opts) end,
    function(r) return r:blocked("backup", r.remote and o.readback and "read-back") end)

  -- 6. The restore drill, when it is due.
  run:step("restore drill", function()
    local done = nightly.drill(run, s3opts)
    nightly.write_state(run, s3opts, { last_drill = os.time(), last_drill_backup = run.last.path:match("[^/]+$") })
    return done
  end, function(r) return r:blocked("backup") or nightly.drill_skip(r, nightly.read_state(r, s3opts)) end)

end, function()
  -- 7. Release the lock, tell the monitor and the webhook, summarise:
  -- whatever happened above, even Ctrl-C.
  if held then held:release() end
  local summary = run:summary()
  if not run:lock_busy() then ping:finish(summary, run:tail(100)) end
  if o.json then print(require("lib.json").encode(summary)) else print(summary.line) end
  io.stdout:flush()
end)

if run.interrupted then pgvault.raise("interrupted", "interrupted") end
if run.failed then
  pgvault.raise(run.failed.kind == "usage" and "config" or run.failed.kind, string.format(
    "nightly %s failed at %s: %s", run.env, run.failed.name, run.failed.error))
end
