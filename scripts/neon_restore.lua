-- restore a backup into a new Neon database, swap it in, point the Fly app at it
local cli = require "lib.cli"
local config = require "lib.config"
local database = require "lib.database"
local envfile = require "lib.envfile"
local fly = require "lib.fly"
local fs = require "pgvault.fs"
local json = require "lib.json"
local naming = require "lib.naming"
local neon = require "lib.neon"
local pgvault = require "pgvault"
local proc = require "pgvault.proc"
local restore = require "lib.restore"
local s3cli = require "lib.s3cli"

local options = {
  config.option("neon_project", { "project" }),
  config.option("neon_branch", { "branch" }),
  config.option("neon_database", { "database" }),
  config.option("neon_role", { "role" }),
  config.option("neon_api_host"),
  config.option("fly_app"),
  config.option("flaps_base_url"),
  config.option("env_file"),
  config.option("to", { short = false, [4] = "the backups (default SRC: its newest complete backup, s3://…/latest)" }),
  { "swap", nil, false, "rename the new database to <db> (the default)" },
  { "no-swap", nil, false, "keep the new database's name and point the app at it" },
  { "drop-old", nil, false, "delete the previous database at the end (or later, with --resume)" },
  { "stage", nil, false, "set the secret but do not deploy it to the machines" },
  { "dry-run", nil, false, "print the plan and the API calls it would make; change nothing" },
  { "resume", nil, false, "finish the newest run that stopped (from .pgvault/)" },
  { "rollback", nil, false, "undo the newest run: old database and secret back" },
  { "jobs", "j", "N", "parallel pg_restore jobs" },
  { "lease-wait", nil, "SECONDS", "how long to wait for a Fly machine leased by someone else (default 60)" },
  { "count-rows", nil, false, "check row counts with count(*) on every table" },
  config.option("pg_bin"),
}
for _, k in ipairs({ "identity", "endpoint_url", "region", "profile", "ca_bundle", "part_size", "parallel",
  "retries" }) do
  options[#options + 1] = config.option(k)
end
local spec = {
  usage = "pgvault neon-restore [--env NAME] [SRC] --project ID --database NAME [--branch NAME|ID] [--role NAME]\n"
    .. "       [--fly-app APP] [--env-file FILE] [--swap|--no-swap] [--drop-old] [--stage] [--dry-run] [--jobs N]\n"
    .. "       [-i KEY]\n"
    .. "       pgvault neon-restore --resume [--drop-old] | --rollback",
  summary = "Restores SRC into a NEW database <db>_restore_<stamp> on the Neon branch (created through the Neon\n"
    .. "API with the same owner), checks it as 'restore' does, swaps names through the API (the live database\n"
    .. "becomes <db>_old_<stamp>), sets the Fly app's DATABASE_URL secret to the pooled URL and deploys it to\n"
    .. "its machines as 'fly secrets deploy' does, and rewrites DATABASE_URL in the env file. Each step is\n"
    .. "recorded in .pgvault/neon-restore-<stamp>.json (no secrets): --resume finishes a run that stopped,\n"
    .. "--rollback puts the old database and secret back. Credentials: NEON_API_KEY and FLY_API_TOKEN (or\n"
    .. "neon_api_key and fly_api_token in the configuration file; never on the command line).",
  options = config.with_options(options),
  positionals = { { "SRC", "the backup: a file, or s3://BUCKET/PREFIX/NAME (…/latest)", optional = true } },
}
local o = config.apply(cli.parse(arg, spec), spec)

-- The API keys: from the environment's settings, else the vendors' own
-- variables (lib.neon, lib.fly); never a flag, which any user could read.
local env_settings = o.settings.env and config.selected(o)
local function secret_setting(key)
  local entry = env_settings and env_settings.values[key]
  if not entry then return nil end
  local v = config.resolve(entry, key, env_settings.path)
  log.secret(v)
  return v
end
local keys = { neon = secret_setting("neon_api_key"), fly = secret_setting("fly_api_token") }

local STATE_DIR = ".pgvault"

-- The state file ------------------------------------------------------------

local function save(st)
  fs.mkdir_p(STATE_DIR, 448)
  fs.write_file(st.path, json.encode(st.record) .. "\n", { mode = 384 })
end

local function newest_state()
  local best
  for _, name in ipairs(fs.exists(STATE_DIR) and fs.listdir(STATE_DIR) or {}) do
    if name:match("^neon%-restore%-%d+%.json$") and (not best or name > best) then best = name end
  end
  if not best then pgvault.raise("usage", "no neon-restore run to continue: " .. STATE_DIR .. " has no state file") end
  local path = STATE_DIR .. "/" .. best
  return { path = path, record = json.decode(fs.read_file(path), path) }
end

local function done(st, step) return st.record.steps[step] == "done" end
local function mark(st, step, status)
  st.record.steps[step] = status
  save(st)
end

-- Runs `fn` as step `name` unless it was done; records the outcome.
-- fn(before) gets the step's earlier status: "running" after a crash in
-- it, "failed" after an error, nil the first time.
local function step(st, name, fn)
  if done(st, name) then return end
  local before = st.record.steps[name]
  st.record.current = name
  mark(st, name, "running")
  local ok, err = pcall(fn, before)
  if not ok then
    st.record.error = pgvault.is_error(err) and err.message or tostring(err)
    mark(st, name, "failed")
    error(err, 0)
  end
  st.record.error = nil
  mark(st, name, "done")
end

-- What the steps need ---------------------------------------------------------

local function neon_client(project)
  return neon.client{ project = project, api_key = keys.neon, api_host = o.neon_api_host }
end
local function fly_client(app)
  return fly.client{ app = app, token = keys.fly, base_url = o.flaps_base_url }
end

local function clients(r)
  return neon_client(r.project), r.fly_app and fly_client(r.fly_app) or nil
end

-- Ends the other sessions on database `db` (lib.database, each logged):
-- Neon refuses to rename a database that is in use. Connected to it as the
-- role, since the maintenance database may not be open to it.
local function end_sessions(n, r, db, seen)
  local url = n:connection_uri(r.branch_id, r.endpoint_id, db, r.role, false)
  neon.protect(url)
  local c <close> = database.connect(url)
  database.terminate_sessions(c, db, seen)
end

-- Renames through the API; a rename already made (a run stopped before
-- it could record it) is taken as done.
local function rename(n, r, from, to)
  if not n:database(r.branch_id, from) and n:database(r.branch_id, to) then
    log.info("database %s is already named %s", from, to)
    return
  end
  local seen = {}
  for attempt = 1, 5 do
    end_sessions(n, r, from, seen)
    local ok, err = pcall(n.rename_database, n, r.branch_id, from, to)
    if ok then return end
    if attempt == 5 or not tostring(err):find("accessed by other users", 1, true) then error(err, 0) end
    proc.sleep(0.2 * attempt)
  end
end

-- The database the app uses once this run is through.
local function app_db(r) return r.swap and r.database or r.new_db end

local function say_state(r)
  local s = r.steps
  local lines = {}
  if s.swap_in == "done" then
    lines[#lines + 1] = string.format("database %s is the restored one; the previous one is %s", r.database, r.old_db)
  elseif s.swap_out == "done" then
    lines[#lines + 1] = string.format("the live database was renamed to %s and the restored one is still %s: "
      .. "NO database is named %s now", r.old_db, r.new_db, r.database)
  elseif s.restore == "done" and not r.swap then
    lines[#lines + 1] = string.format("the restored database is %s; %s is unchanged", r.new_db, r.database)
  end
  if r.fly_app then
    lines[#lines + 1] = s.secret == "done" and string.format("the Fly app %s's DATABASE_URL names %s%s", r.fly_app,
      app_db(r), s.deploy == "done" and "" or " but is not deployed to its machines yet")
      or string.format("the Fly app %s's DATABASE_URL is unchanged", r.fly_app)
  end
  return table.concat(lines, "; ")
end

-- The procedure ---------------------------------------------------------------

-- 1. Resolve project, branch, database, owner, endpoint, backup.
local function resolve()
  local src = o.SRC
  if not src and s3cli.is_s3(o.to) then src = o.to:gsub("/*$", "/") .. "latest" end
  if not src then pgvault.raise("usage", "missing SRC, and no s3:// destination (--to) to take the latest from") end
  local project = o.project or os.getenv("NEON_PROJECT_ID")
  if not o.database then pgvault.raise("usage", "missing --database NAME (the database to replace)") end
  if o.swap and o.no_swap then pgvault.raise("usage", "--swap and --no-swap exclude each other") end
  local n = neon_client(project)
  local branch = n:branch(o.branch)
  local endpoint = n:endpoint(branch.id)
  local db = n:database(branch.id, o.database)
  if not db then pgvault.raise("usage", string.format("no database %s on branch %s", o.database, branch.name)) end
  -- What would fail late is checked before anything changes: the env file
  -- can be rewritten, the Fly token opens the app.
  if o.env_file then envfile.check(o.env_file, "DATABASE_URL") end
  local fly_app = o.fly_app or os.getenv("FLY_APP")
  local had_secret
  if fly_app then
    local f <close> = fly_client(fly_app)
    had_secret = false
    for _, sec in ipairs(f:secrets()) do had_secret = had_secret or sec.name == "DATABASE_URL" end
  end
  local stamp = naming.stamp()
  local r = {
    format = 1, stamp = stamp, src = src, project = project, branch_id = branch.id, branch = branch.name,
    endpoint_id = endpoint.id, host = endpoint.host, database = db.name, owner = db.owner_name,
    role = o.role or db.owner_name, new_db = naming.db_with_suffix(db.name, "_restore_" .. stamp),
    old_db = naming.db_with_suffix(db.name, "_old_" .. stamp), swap = not o.no_swap, drop_old = o.drop_old,
    fly_app = fly_app, had_secret = had_secret, env_file = o.env_file, stage = o.stage, jobs = o.jobs,
    steps = {}, started_at = naming.iso8601(),
  }
  n:close()
  return { path = STATE_DIR .. "/neon-restore-" .. stamp .. ".json", record = r }
end

local function plan(r)
  local P = "/projects/" .. r.project .. "/branches/" .. r.branch_id .. "/databases"
  local out = {
    string.format("restore %s into a new database %s on branch %s (%s) of Neon project %s, owner %s",
      r.src, r.new_db, r.branch, r.branch_id, r.project, r.owner),
    "  POST " .. P .. "  {database: {name: " .. r.new_db .. ", owner_name: " .. r.owner .. "}}",
    "  pg_restore into " .. r.new_db .. " through the direct host " .. r.host .. "; row counts checked",
  }
  if r.swap then
    out[#out + 1] = "  PATCH " .. P .. "/" .. r.database .. "  {database: {name: " .. r.old_db .. "}}"
    out[#out + 1] = "  PATCH " .. P .. "/" .. r.new_db .. "  {database: {name: " .. r.database .. "}}"
  end
  if r.fly_app then
    out[#out + 1] = string.format("  POST /v1/apps/%s/secrets  {values: {DATABASE_URL: <pooled URL of %s on %s>}}",
      r.fly_app, app_db(r), neon.pooled_host(r.host))
    out[#out + 1] = r.stage and "  (--stage: not deployed to the machines)"
      or string.format("  for each machine of %s: POST lease, POST update {min_secrets_version}, GET wait, "
        .. "DELETE lease", r.fly_app)
  end
  if r.env_file then out[#out + 1] = "  rewrite DATABASE_URL in " .. r.env_file end
  if r.drop_old then out[#out + 1] = "  DELETE " .. P .. "/" .. (r.swap and r.old_db or r.database) end
  return table.concat(out, "\n")
end

-- 2-8: the steps, each recorded.
local function run_steps(st)
  local r = st.record
  local n <close>, f = clients(r)
  step(st, "create", function()
    -- a database of this run's name is this run's (created before a crash)
    if n:database(r.branch_id, r.new_db) then return end
    n:create_database(r.branch_id, r.new_db, r.owner)
  end)
  step(st, "restore", function(before)
    if before then
      log.info("restoring again into a fresh %s (the previous attempt did not finish)", r.new_db)
      n:delete_database(r.branch_id, r.new_db)
      n:create_database(r.branch_id, r.new_db, r.owner)
    end
    local direct = n:connection_uri(r.branch_id, r.endpoint_id, r.new_db, r.role, false)
    neon.protect(direct)
    -- restore's own steps (lib.restore), into the database Neon created
    local job <close> = restore.plan { src = r.src, db = direct, database = r.database, jobs = r.jobs,
      count_rows = o.count_rows, identity = o.identity, s3 = s3cli.opts(o), pg_bin = o.pg_bin }
    local src <close> = restore.open(job)
    local db = restore.into(job, src, r.new_db)
    restore.load(job, db, { src:reader(), restore.checksum(src), restore.unwrap(job, src), restore.progress(),
      restore.pg_restore(job, src, db) })
    r.row_counts_checked = restore.check_rows(job, src, db)
  end)
  if r.swap then
    -- A Ctrl-C waits for the two renames: stopping between them would leave
    -- no database under the app's name.
    pgvault.critical(function()
      step(st, "swap_out", function() rename(n, r, r.database, r.old_db) end)
      step(st, "swap_in", function() rename(n, r, r.new_db, r.database) end)
    end)
  end
  local pooled = n:connection_uri(r.branch_id, r.endpoint_id, app_db(r), r.role, true)
  r.app_url = neon.protect(pooled)
  r.direct_url = neon.protect(n:connection_uri(r.branch_id, r.endpoint_id, app_db(r), r.role, false))
  if f then
    step(st, "secret", function() r.secrets_version = f:set_secrets{ DATABASE_URL = pooled } end)
    if not r.stage then
      step(st, "deploy", function()
        r.machines = f:deploy(r.secrets_version, tonumber(o.lease_wait))
        if r.machines == 0 then log.warn("app %s has no machines: the secret stays staged for its next deploy",
          r.fly_app) end
      end)
    end
    f:close()
  end
  if r.env_file then step(st, "env_file", function() envfile.set(r.env_file, "DATABASE_URL", pooled) end) end
  if r.drop_old then
    step(st, "drop_old", function() n:delete_database(r.branch_id, r.swap and r.old_db or r.database) end)
  end
end

-- A failure before the swap: the new database goes (the live one first
-- put back under its name if it was moved), everything is as it was.
local function undo_before_swap(st)
  local r = st.record
  local n <close> = neon_client(r.project)
  if r.steps.swap_out == "done" then
    local ok, err = pcall(rename, n, r, r.old_db, r.database)
    if not ok then
      return string.format("%s; putting %s back under its name failed too (%s). Finish with 'pgvault neon-restore "
        .. "--resume', or undo with 'pgvault neon-restore --rollback'", say_state(r), r.old_db, tostring(err))
    end
    r.steps.swap_out = nil
  end
  local ok, err = pcall(n.delete_database, n, r.branch_id, r.new_db)
  if not ok then
    save(st)
    return string.format("%s is unchanged, but deleting database %s failed (%s): delete it in the Neon Console",
      r.database, r.new_db, tostring(err))
  end
  r.steps.create, r.steps.restore, r.steps.swap_out, r.steps.swap_in = nil, nil, nil, nil
  save(st)
  return string.format("database %s was deleted; %s%s are as they were ('pgvault neon-restore --resume' starts "
    .. "again)", r.new_db, r.database, r.fly_app and (" and the Fly app " .. r.fly_app) or "")
end

-- --rollback: the old database back under its name, the secret back.
local function rollback(st)
  local r = st.record
  local n <close>, f = clients(r)
  if r.steps.swap_in == "done" then rename(n, r, r.database, r.new_db) end
  if r.steps.swap_out == "done" then rename(n, r, r.old_db, r.database) end
  r.steps.swap_in, r.steps.swap_out = nil, nil
  save(st)
  local url = n:connection_uri(r.branch_id, r.endpoint_id, r.database, r.role, true)
  neon.protect(url)
  if f and r.steps.secret == "done" then
    -- an app that had no DATABASE_URL before gets none again
    local v = f:set_secrets{ DATABASE_URL = r.had_secret ~= false and url }
    if not r.stage then f:deploy(v) end
    r.steps.secret, r.steps.deploy = nil, nil
  end
  if r.env_file and r.steps.env_file == "done" then envfile.set(r.env_file, "DATABASE_URL", url) end
  r.steps.env_file, r.rolled_back = nil, true
  save(st)
  print(string.format("rolled back: %s is the previous database again%s; the restored copy is kept as %s", r.database,
    f and string.format(" and the Fly app %s's DATABASE_URL names it", r.fly_app) or "", r.new_db))
end

local function summary(r)
  print(string.format("restored %s into Neon database %s (branch %s, project %s)", r.src, app_db(r), r.branch,
    r.project))
  print(string.format("  row counts checked: %d tables", r.row_counts_checked or 0))
  if r.swap and not r.drop_old then print("  previous database kept as " .. r.old_db
    .. " (delete it with: pgvault neon-restore --resume --drop-old)") end
  print("  app URL (pooled): " .. r.app_url)
  print("  direct URL (pg_dump, pg_restore, psql): " .. r.direct_url)
  if r.fly_app then
    print(string.format("  Fly app %s: DATABASE_URL set (secrets version %d)%s", r.fly_app, r.secrets_version,
      r.stage and ", staged (deploy with 'fly secrets deploy')" or string.format(", deployed to %d machine(s)",
        r.machines or 0)))
  end
  if r.env_file then print("  " .. r.env_file .. ": DATABASE_URL rewritten") end
end

-- main ------------------------------------------------------------------------

-- What a recorded run did, for --dry-run with --resume or --rollback.
local function recorded(st)
  local names = {}
  for _, name in ipairs({ "create", "restore", "swap_out", "swap_in", "secret", "deploy", "env_file", "drop_old" }) do
    if st.record.steps[name] then names[#names + 1] = name .. " " .. st.record.steps[name] end
  end
  return st.path .. ": " .. (#names > 0 and table.concat(names, ", ") or "no step recorded")
end

if o.rollback then
  local st = newest_state()
  if o.dry_run then return print(recorded(st) .. "\n--rollback would undo the swap and the secret of this run") end
  return rollback(st)
end
local st
if o.resume then
  st = newest_state()
  if o.dry_run then
    print(recorded(st))
    return print(plan(st.record))
  end
  if st.record.rolled_back then
    pgvault.raise("usage", st.path .. " was rolled back: start a new run instead of --resume")
  end
  if o.drop_old then st.record.drop_old = true end
  log.info("resuming %s from step %s", st.path, tostring(st.record.current))
else
  st = resolve()
  if o.dry_run then
    print(plan(st.record))
    return
  end
  save(st)
end
local ok, err = pcall(run_steps, st)
if not ok then
  local r = st.record
  local where
  if r.steps.swap_in ~= "done" and r.steps.secret ~= "done" then
    local uok, msg = pcall(pgvault.uninterrupted, undo_before_swap, st)
    where = uok and msg or ("cleaning up failed too (" .. tostring(msg) .. "): " .. say_state(r))
  else
    where = say_state(r) .. ". Finish with 'pgvault neon-restore --resume', or undo with 'pgvault neon-restore "
      .. "--rollback'"
  end
  if pgvault.is_error(err) then
    err.message = string.format("neon-restore stopped at step %s: %s. %s", tostring(r.current), err.message, where)
  end
  error(err, 0)
end
st.record.current, st.record.finished_at = nil, naming.iso8601()
save(st)
summary(st.record)
