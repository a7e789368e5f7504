-- rebuild the indexes a collation version change put at risk, then refresh the versions
local cli = require "lib.cli"
local collation = require "lib.collation"
local json = require "lib.json"
local reindex = require "lib.reindex"
local pgvault = require "pgvault"

local o = cli.parse(arg, {
  usage = "pgvault collation-fix [--db URL] [--all-databases] [--dry-run] [--no-backup] [--to DIR] [--json]",
  summary = "Fixes a \"collation version mismatch\" properly: checks (as collation-check does), takes a backup,\n"
    .. "rebuilds every index that depends on a mismatched collation (REINDEX, one index at a time, outside\n"
    .. "any transaction), and only then refreshes the recorded versions (ALTER DATABASE ... REFRESH\n"
    .. "COLLATION VERSION, ALTER COLLATION ... REFRESH VERSION). Refreshing alone would only silence the\n"
    .. "warning. A unique index that cannot be rebuilt because two keys now compare equal is reported with\n"
    .. "the duplicate keys, and the versions it depends on are left unrefreshed. Checks again at the end.",
  options = {
    { "db", "d", "URL", "database URL or conninfo (default: libpq's environment, PGHOST, PGDATABASE ...)" },
    { "all-databases", "a", false, "fix every database of that server that accepts connections" },
    { "dry-run", "n", false, "show what would be done; change nothing, take no backup" },
    { "no-backup", nil, false, "skip the backup taken before anything changes" },
    { "to", nil, "DIR", "where the backup goes (default: db_backups)" },
    { "json", nil, false, "print the outcome as JSON on stdout" },
  },
  epilog = "Privileges: REINDEX needs ownership of each table, the refresh needs ownership of the database\n"
    .. "and of each collation (or a superuser). The backup needs pg_dump (see 'pgvault backup --help').",
})

if o.no_backup and o.to then
  pgvault.raise("usage", "--to names where the backup goes, and --no-backup takes none (see 'pgvault collation-fix "
    .. "--help')")
end
o.to = o.to or "db_backups"

local function say(fmt, ...)
  if not o.json then print(string.format(fmt, ...)) end
end

local function say_lines(lines)
  for _, l in ipairs(lines) do say("%s", l) end
end

-- The backup taken before changing anything, through the backup workflow's
-- library; its name says why it was taken.
local function take_backup(target)
  local backup = require "lib.backup"
  local suffix = "collation-fix-" .. target.name:sub(1, 50):gsub("[^%w_-]", "_")
  -- An explicit database name: the URL may rely on PGDATABASE.
  return backup.run({ db = collation.url_for(target.url, target.name), to = o.to, suffix = suffix }).path
end

local function fix_database(target)
  local out = { database = target.name }
  local conn = target.conn or collation.connect(target.url)

  -- 1. Check, as collation-check does.
  local before = collation.check(conn)
  out.before = collation.plain(before)
  say_lines(collation.describe(before))
  if not before.needs_fix then
    conn:close()
    say("database %s: nothing to fix", target.name)
    out.status = "ok"
    return out
  end

  -- 2. The statements, and whether this user may run them.
  out.plan = reindex.plan(before)
  if o.dry_run then
    say("dry run: would back up %s%s, then run:", target.name, o.no_backup and " (no: --no-backup)" or (" to " .. o.to))
    for _, s in ipairs(out.plan) do say("  %s;", s) end
  end
  local missing = reindex.missing_privileges(before)
  if #missing > 0 then
    conn:close()
    pgvault.raise("pg", string.format("cannot fix database %s as user %s: it needs ownership of %s; connect as the "
      .. "owner or a superuser (nothing was changed)", target.name, before.user, table.concat(missing, "; ")))
  end
  if o.dry_run then
    conn:close()
    out.status = "dry-run"
    return out
  end

  -- 3. A backup before anything changes (no connection sits idle meanwhile).
  if not o.no_backup then
    conn:close()
    out.backup = take_backup(target)
    say("backup of %s: %s", target.name, out.backup)
    conn = collation.connect(target.url)
  end

  -- 4. Rebuild, then refresh what every rebuild allows.
  local result = reindex.fix(conn, before)
  conn:close()
  out.rebuilt, out.failed = result.rebuilt, result.failed
  out.refreshed, out.not_refreshed = result.refreshed, result.not_refreshed
  say_lines(reindex.describe(result, before.user))

  -- 5. Check again, on a new connection: the start-up warning must be gone too.
  local conn2 <close> = collation.connect(target.url)
  local after = collation.check(conn2)
  out.after = collation.plain(after)
  say("after the fix:")
  say_lines(collation.describe(after))
  if #before.startup_warnings > 0 and #after.startup_warnings == 0 then
    say("the server no longer warns about the collation version when connecting to %s", target.name)
  end
  out.status = (#result.failed == 0 and #result.not_refreshed == 0 and not after.needs_fix) and "fixed" or "incomplete"
  return out
end

local results, failures = {}, {}
for _, target in ipairs(collation.targets(o.db or "", o.all_databases)) do
  local ok, res = pcall(fix_database, target)
  if ok then
    results[#results + 1] = res
    if res.status == "incomplete" then failures[#failures + 1] = target.name end
  else
    if not pgvault.is_error(res) or res.kind == "interrupted" or not o.all_databases then error(res, 0) end
    results[#results + 1] = { database = target.name, status = "error", error = tostring(res) }
    failures[#failures + 1] = target.name
    say("database %s: %s", target.name, tostring(res))
  end
end

if o.json then print(json.encode({ ok = #failures == 0, databases = json.array(results) })) end
if #failures > 0 then
  pgvault.raise("verify", "collation fix incomplete for " .. table.concat(failures, ", ") ..
    ": see the report above; nothing was refreshed where an index did not rebuild")
end
