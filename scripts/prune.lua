-- remove old backups by restic's keep rules (--dry-run: the table of what is kept and why)
local cli = require "lib.cli"
local config = require "lib.config"
local json = require "lib.json"
local lock = require "lib.lock"
local prune = require "lib.prune"
local retention = require "lib.retention"
local s3cli = require "lib.s3cli"

local KEYS = { "to", "keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly",
  "keep_within", "keep_within_hourly", "keep_within_daily", "keep_within_weekly", "keep_within_monthly",
  "keep_within_yearly", "grace", "lock_ttl", "endpoint_url", "region", "profile", "ca_bundle", "retries", "timeout",
  "trust" }
local options = config.options(KEYS)
options[#options + 1] = { "dry-run", "n", false, "change nothing: print what would be kept (and why) and removed" }
options[#options + 1] = { "json", nil, false, "print the plan (or what was done) as JSON" }
options[#options + 1] = { "wait", nil, false, "wait for a running nightly or prune of this environment to finish" }
local spec = {
  usage = "pgvault prune [DEST] [--env NAME] [--keep-daily N ...] [--dry-run]",
  summary = "Removes the backups in DEST (a directory or s3://BUCKET/PREFIX/; default: the environment's\n"
    .. "destination, else db_backups) that no keep rule keeps, with restic's rules: --keep-last N, the\n"
    .. "newest of each of the last N hours/days/ISO weeks/months/years (--keep-hourly ... --keep-yearly,\n"
    .. "N or 'unlimited'), everything within a duration of the newest (--keep-within 1y2m3d4h) and the\n"
    .. "newest per period within one (--keep-within-daily ...). Rules apply per suffix (environment;\n"
    .. "with --all-databases also per database); the newest complete backup of each is never removed.\n"
    .. "A backup is deleted manifest first, so a prune stopped half-way never leaves a damaged 'latest'.\n"
    .. "Archives without a manifest, temporary files and unfinished multipart uploads are removed once\n"
    .. "older than --grace (default 24h: an upload may be in flight). One listing pass; deletions in\n"
    .. "batches. Takes the environment's lock (not with --dry-run).",
  options = config.with_options(options),
  positionals = { { "DEST", "directory or s3://BUCKET/PREFIX/ (default: --to, the environment's, db_backups)",
    optional = true } },
}
local o = config.apply(cli.parse(arg, spec), spec)
local dest = o.DEST or o.to or "db_backups"
local s3opts = s3cli.opts(o)

-- 1. The rules.
local policy = retention.policy(o)
prune.announce(policy)

-- 2. One run at a time (a dry run changes nothing and needs no lock).
local held <close> = not o.dry_run and lock.acquire { -- luacheck: ignore held (released when the run ends)
  to = dest, env = o.settings.env or "local", wait = o.wait, s3 = s3opts, command = "prune",
  ttl = o.lock_ttl and retention.seconds(o.lock_ttl, "lock-ttl") } or nil

-- 3. What is there: one listing pass.
local inv = prune.inventory(dest, s3opts)

-- 4. What goes.
local plan = prune.plan(inv, policy, { grace = prune.grace_seconds(o.grace), trust = o.trust })

-- 5. A table for --dry-run, or the deletions.
local rows = prune.rows(plan)
if o.dry_run then
  if o.json then
    local out = json.array()
    for _, r in ipairs(rows) do out[#out + 1] = { action = r[1], name = r[2], why = r[3] } end
    print(json.encode(out))
  elseif #rows == 0 then
    print("nothing in " .. dest)
  else
    table.insert(rows, 1, { "ACTION", "NAME", "WHY" })
    local w1, w2 = 0, 0
    for _, r in ipairs(rows) do w1, w2 = math.max(w1, #r[1]), math.max(w2, #r[2]) end
    for _, r in ipairs(rows) do print(string.format("%-" .. w1 .. "s  %-" .. w2 .. "s  %s", r[1], r[2], r[3])) end
  end
  return
end
for _, r in ipairs(rows) do
  if r[1] ~= "keep" then log.info("%s %s (%s)", r[1], r[2], r[3]) end
end
local done = prune.apply(plan, inv)
local line = string.format("pruned %s: %d backups kept, %d removed; %d incomplete or temporary files removed, "
  .. "%d unfinished uploads aborted", dest, #plan.keep, done.backups, done.orphans, done.uploads)
if o.json then
  print(json.encode({ destination = dest, kept = #plan.keep, removed = done.backups, orphans = done.orphans,
    uploads = done.uploads }))
else
  print(line)
end
