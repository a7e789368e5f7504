-- The steps of `pgvault neon-restore`, which scripts/neon_restore.lua calls
-- in order (copy that file to change the procedure; README "Restoring
-- production on Neon" says what each step does on the user's accounts):
--   local run <close> = nr.start(o)        1. the Neon project, branch, database, owner and read-write
--                                             endpoint resolved, the env file and the Fly token checked;
--                                             with --resume, the newest run's record. Nothing changes.
--   run:restore_options()                  lib.restore's options: the live database's direct URL, the
--                                             backup (…/latest: the newest of this database), --jobs, -i
--   nr.check_backup(run, src)              with --trust, before anything changes: the whole backup read
--                                             once, every block against the signed manifest
--   run:backup(src)                        the backup restore opened, recorded (a resumed run reads it)
--   run:plan()                             --dry-run's text: every step and API call it would make
--   run:step(NAME, fn)                     a step recorded in the state file (running, then done or
--                                             failed); skipped when a resumed run finds it done
--   nr.create(run)                         2. <db>_restore_<stamp> created through the API, same owner
--   nr.recreate(run)                       3. (a restore that did not finish starts again in a fresh one)
--   nr.rename_live(run), nr.rename_new(run)   4. the swap: live -> <db>_old_<stamp>, new -> <db>
--   nr.set_secret(run)                     5. the Fly app's DATABASE_URL: the pooled URL
--   nr.deploy(run)                         6. deployed to the app's machines as flyctl does
--   nr.rewrite_env_file(run)               7. DATABASE_URL in the env file
--   nr.drop_old(run)                       8. the previous database deleted (--drop-old)
--   run:summary()                          what was restored, row counts, old name, URLs (no password)
--   nr.rollback(o)                         --rollback: the old database and the old secret back
-- A run's record (run.r) is its state file, .pgvault/neon-restore-<stamp>.json
-- (0600 in a 0700 directory; names, ids, statuses, URLs without passwords).
-- Closing a run after an error: before the swap, the new database is
-- deleted (and the live one renamed back if it had been moved); after it,
-- nothing is undone. Either way the error says what state things are in
-- and the command that goes on.
local fs = require "pgvault.fs"
local pgvault = require "pgvault"
local proc = require "pgvault.proc"
local stream = require "pgvault.stream"
local config = require "lib.config"
local database = require "lib.database"
local envfile = require "lib.envfile"
local fly = require "lib.fly"
local json = require "lib.json"
local naming = require "lib.naming"
local neon = require "lib.neon"
local pipeline = require "lib.pipeline"
local restore = require "lib.restore"
local s3cli = require "lib.s3cli"
local trust = require "lib.trust"

local nr = {}

nr.STATE_DIR = ".pgvault"
nr.STEPS = { "create", "restore", "swap_out", "swap_in", "secret", "deploy", "env_file", "drop_old" }

-- The options that shape a new run; a resumed or rolled-back run takes
-- them from its record, so giving one there is a mistake.
local RUN_OPTIONS = { "project", "branch", "database", "role", "fly_app", "env_file", "no_swap", "swap", "stage",
  "to", "source_database" }

-- An option of restore's, as restore describes it (the same engine).
local function restore_option(name)
  for _, opt in ipairs(restore.CLI.options) do
    if opt[1] == name then return opt end
  end
  error("restore has no option --" .. name)
end

local options = {}
local function add_options(list) for _, opt in ipairs(list) do options[#options + 1] = opt end end
add_options {
  config.option("neon_project", { "project" }),
  config.option("neon_branch", { "branch" }),
  config.option("neon_database", { "database" }),
  config.option("neon_role", { "role" }),
  config.option("fly_app"),
  config.option("env_file"),
  config.option("to", { short = false, [4] = "where the backups are: with no SRC, the newest complete backup of "
    .. "--database there is restored" }),
  { "source-database", nil, "NAME", "with …/latest or --to: the newest backup of database NAME (default: "
    .. "--database; for a backup of a database named otherwise)" },
  { "no-swap", nil, false, "keep the new database's name <db>_restore_<stamp> and point the app at it; the live "
    .. "database stays as it is" },
  { "swap", nil, false, "rename the new database to <db>, the live one to <db>_old_<stamp> (the default)" },
  { "stage", nil, false, "set the Fly secret but do not deploy it to the machines ('fly secrets deploy' later)" },
  { "drop-old", nil, false, "delete the previous database at the end (or later: --resume --drop-old)" },
  { "dry-run", nil, false, "print the plan and every API call it would make; change nothing" },
  { "resume", nil, false, "go on with the newest run in .pgvault/ from the step that failed" },
  { "rollback", nil, false, "undo the newest run: the previous database back under its name, DATABASE_URL and "
    .. "the env file back" },
  restore_option("jobs"),
  config.option("identity", { [4] = "age identity file that opens an encrypted backup" }),
}
add_options(trust.TRUST_OPTIONS)
add_options {
  restore_option("count-rows"),
  config.option("pg_bin", { [4] = "directory of the pg_restore to use (default: the newest here)" }),
  { "lease-wait", nil, "SECONDS", "how long to wait for a Fly machine leased by someone else (default 60)" },
  config.option("neon_api_host"),
  config.option("flaps_base_url"),
}

nr.CLI = {
  usage = "pgvault neon-restore [--env NAME] [SRC] --project ID --database NAME [--branch NAME|ID] [--role NAME]\n"
    .. "       [--fly-app APP] [--env-file FILE] [--no-swap] [--stage] [--drop-old] [--dry-run] [--jobs N] [-i FILE]\n"
    .. "       [--trust KEY.pub]... [--to DEST] [--source-database NAME]\n"
    .. "       pgvault neon-restore --resume [--drop-old] [--dry-run]\n"
    .. "       pgvault neon-restore --rollback [--dry-run]",
  summary = "Restores SRC into a NEW database <db>_restore_<stamp> created through the Neon API on the branch\n"
    .. "(same owner), checks it as 'restore' does (size, SHA-256 and row counts against the manifest), gives it\n"
    .. "the live database's privileges and settings, swaps names through the API (the live database becomes\n"
    .. "<db>_old_<stamp>, kept unless --drop-old), sets the Fly app's DATABASE_URL secret to the new pooled URL\n"
    .. "and deploys it to the app's machines as 'fly secrets deploy' does, and rewrites DATABASE_URL in the env\n"
    .. "file. Each step is recorded in .pgvault/neon-restore-<stamp>.json (no secrets). A failure before the\n"
    .. "swap deletes the new database; after it, --resume goes on and --rollback undoes. Keys: NEON_API_KEY,\n"
    .. "FLY_API_TOKEN (or FLY_ACCESS_TOKEN), or neon_api_key and fly_api_token in the configuration file;\n"
    .. "never on the command line.",
  options = config.with_options(s3cli.with_options(options)),
  positionals = { { "SRC", "the backup: a file, DIR/latest or s3://BUCKET/PREFIX/NAME (…/latest: the newest "
    .. "complete backup of --database; with --trust, the newest one a trusted key signed); default: the newest in "
    .. "--to", optional = true } },
}

local function usage(fmt, ...) pgvault.raise("usage", string.format(fmt, ...)) end

local function plural(n, word) return string.format("%d %s%s", n, word, n == 1 and "" or "s") end

-- The state file ------------------------------------------------------------

local Run = {}
Run.__index = Run

function Run:save()
  fs.mkdir_p(nr.STATE_DIR, 448)
  fs.write_file(self.path, json.encode(self.r) .. "\n", { mode = 384 })
end

local function newest_state()
  local best
  for _, name in ipairs(fs.exists(nr.STATE_DIR) and fs.listdir(nr.STATE_DIR) or {}) do
    if name:match("^neon%-restore%-%d+%.json$") and (not best or name > best) then best = name end
  end
  if not best then
    usage("no neon-restore run to go on with: %s/ in this directory has no state file (run it from where the "
      .. "run started)", nr.STATE_DIR)
  end
  local path = nr.STATE_DIR .. "/" .. best
  return path, json.decode(fs.read_file(path), path)
end

-- Runs fn(run, before) as step `name` unless it is done; records it as
-- running first (a run that dies in it is recognised), then done or failed.
-- `before` is the step's earlier status: "running" after a crash in it,
-- "failed" after an error, nil the first time.
function Run:step(name, fn)
  local r = self.r
  if r.steps[name] == "done" then return end
  local before = r.steps[name]
  r.current, r.steps[name], self.ran = name, "running", true
  self:save()
  local ok, err = pcall(fn, self, before)
  if not ok then
    r.error = pgvault.is_error(err) and err.message or tostring(err)
    r.steps[name] = "failed"
    self:save()
    error(err, 0)
  end
  r.error, r.steps[name] = nil, "done"
  self:save()
end

function Run:done(name) return self.r.steps[name] == "done" end

-- The API clients and keys ----------------------------------------------------

-- The API keys from the environment's settings (env/file references), else
-- the vendors' own variables (lib.neon, lib.fly); never a flag.
local function api_keys(o)
  local env = o.settings and o.settings.env and config.selected(o)
  local function setting(key)
    local entry = env and env.values[key]
    if not entry then return nil end
    local v = config.resolve(entry, key, env.path)
    log.secret(v)
    return v
  end
  return { neon = setting("neon_api_key"), fly = setting("fly_api_token") }
end

local function clients(run)
  local r, o = run.r, run.o
  run.neon = neon.client{ project = r.project, api_key = run.keys.neon, api_host = o.neon_api_host }
  if r.fly_app then run.fly = fly.client{ app = r.fly_app, token = run.keys.fly, base_url = o.flaps_base_url } end
end

-- The options: one mode, and what a resumed run would ignore refused.
local function check_modes(o)
  if o.resume and o.rollback then usage("--resume and --rollback exclude each other: give one") end
  if o.swap and o.no_swap then usage("--swap and --no-swap exclude each other: give one") end
  if o.rollback and o.drop_old then usage("--rollback keeps both databases; --drop-old has no meaning with it") end
  if o.lease_wait and (math.tointeger(tonumber(o.lease_wait)) or -1) < 0 then
    usage("--lease-wait needs a whole number of seconds, not '%s'", tostring(o.lease_wait))
  end
  if not (o.resume or o.rollback) then return end
  local mode = o.resume and "--resume" or "--rollback"
  if o.SRC then usage("%s takes no SRC: it goes on with the backup the run recorded", mode) end
  local sources = o.settings and o.settings.sources or {}
  for _, name in ipairs(RUN_OPTIONS) do
    local flag = sources[name] or sources["neon_" .. name]
    if not flag and o[name] ~= nil and o[name] ~= false then flag = "--" .. name:gsub("_", "-") end
    if type(flag) == "string" and flag:sub(1, 2) == "--" then
      usage("%s takes the run's settings from its record; %s cannot change them (start a new run instead)", mode,
        flag)
    end
  end
end

-- 1. Resolve -------------------------------------------------------------------

-- A new run: project, branch, database, owner, endpoint; what would fail
-- late (the env file, the Fly token and app) checked before anything changes.
local function resolve(run)
  local o = run.o
  local src = o.SRC
  if not src and o.to then src = o.to:gsub("/*$", "") .. "/latest" end
  if not src then usage("name the backup (SRC: a file, DIR/latest or s3://…/latest), or give --to (or --env) "
    .. "to restore the newest backup there") end
  if not o.database then usage("missing --database NAME: the Neon database to replace") end
  local project = o.project
  local n <close> = neon.client{ project = project, api_key = run.keys.neon, api_host = o.neon_api_host }
  local branch = n:branch(o.branch)
  local endpoint = n:endpoint(branch.id)
  local db = n:database(branch.id, o.database)
  if not db then
    local names = {}
    for _, d in ipairs(n:databases(branch.id)) do names[#names + 1] = d.name end
    usage("branch %s of Neon project %s has no database %s (it has: %s): check --database", branch.name, project,
      o.database, #names > 0 and table.concat(names, ", ") or "none")
  end
  if o.env_file then envfile.check(o.env_file, "DATABASE_URL") end
  -- (not flyctl's FLY_APP: a shell that deploys some app must not make
  -- this run change that app's secret unasked)
  local fly_app = o.fly_app
  if o.stage and not fly_app then usage("--stage without --fly-app: there is no Fly secret to stage") end
  local had_secret
  if fly_app then
    local f <close> = fly.client{ app = fly_app, token = run.keys.fly, base_url = o.flaps_base_url }
    had_secret = false
    for _, sec in ipairs(f:secrets()) do had_secret = had_secret or sec.name == "DATABASE_URL" end
  end
  local stamp = naming.stamp()
  run.path = nr.STATE_DIR .. "/neon-restore-" .. stamp .. ".json"
  run.r = {
    format = 1, stamp = stamp, src = src, project = project, branch_id = branch.id, branch = branch.name,
    endpoint_id = endpoint.id, host = endpoint.host, database = db.name, owner = db.owner_name,
    role = o.role or db.owner_name, new_db = naming.db_with_suffix(db.name, "_restore_" .. stamp),
    old_db = naming.db_with_suffix(db.name, "_old_" .. stamp), swap = not o.no_swap, drop_old = o.drop_old,
    source_database = o.source_database,
    fly_app = fly_app, had_secret = had_secret, env_file = o.env_file, stage = o.stage, jobs = o.jobs,
    identity = o.identity, steps = {}, started_at = naming.iso8601(),
  }
end

-- --resume: the newest run's record.
local function resume(run)
  local o = run.o
  run.path, run.r = newest_state()
  local r = run.r
  if r.rolled_back then usage("%s was rolled back: start a new run instead of --resume", run.path) end
  if o.drop_old and not r.drop_old then r.drop_old, run.r.finished_at = true, nil end
  if r.finished_at then
    log.info("%s finished at %s: nothing left to do%s", run.path, r.finished_at, r.swap and r.steps.drop_old ~= "done"
      and (" (--resume --drop-old deletes the previous database " .. r.old_db .. ")") or "")
    return
  end
  local next_step
  for _, s in ipairs(nr.STEPS) do
    if not next_step and r.steps[s] ~= "done" then next_step = s end
  end
  if not o.dry_run then log.info("going on with %s from step %s", run.path, tostring(next_step)) end
end

-- The run: resolved (a new one) or read back (--resume), with its clients.
-- Nothing is changed yet.
function nr.start(o)
  check_modes(o)
  local run = setmetatable({ o = o, keys = api_keys(o), dry_run = o.dry_run }, Run)
  if o.resume then resume(run) else resolve(run) end
  clients(run)
  return run
end

-- Whether step `name` is still to be done.
function Run:needs(name) return self.r.steps[name] ~= "done" end

-- The options of lib.restore's steps: planned against the live database
-- (its direct URL: pg_restore must not go through the pooler; its name
-- locked against a second restore; its privileges and settings carried
-- over), restoring into the new one with restore.into.
function Run:restore_options()
  local r, o = self.r, self.o
  local url = self.neon:connection_uri(r.branch_id, r.endpoint_id, r.database, r.role, false)
  neon.protect(url)
  return { src = r.backup or r.src, db = url, database = r.source_database or r.database,
    jobs = o.jobs or r.jobs, count_rows = o.count_rows,
    identity = #(o.identity or {}) > 0 and o.identity or r.identity,
    trust = #(o.trust or {}) > 0 and o.trust or r.trust, s3 = s3cli.opts(o), pg_bin = o.pg_bin }
end

-- With trusted keys, a new run reads the whole backup once before anything
-- changes on Neon: each block against the signed manifest's digest, then
-- its size and SHA-256 (trust.authenticate has checked the signature and
-- the size already). A replaced or damaged object stops the run here; the
-- restore checks every block again as it streams.
function nr.check_backup(run, src)
  if not (src.trusted and run:needs("create")) then return end
  log.info("reading %s once to check every block against its signed manifest before anything changes", src.name)
  stream.run(pipeline.flatten { src:reader(), trust.verifier(src), restore.checksum(src), stream.discard() })
  log.info("every block of %s matches its signed manifest", src.name)
end

-- Records the backup restore opened (…/latest resolved: a resumed run
-- restores the same one).
function Run:backup(src)
  local r, m = self.r, src.manifest
  r.backup = src.name
  if src.trusted then
    -- the keys that accepted it (their files): a resumed run checks with them
    r.trust, r.signed_by = {}, src.trusted.key_id
    for _, k in ipairs(trust.keys(self.o.trust) or {}) do r.trust[#r.trust + 1] = k.path end
  end
  self.backup_info = string.format("%s; %s", not m and "no manifest: only pg_restore's status is checked"
    or string.format("its manifest lists %s", plural(type(m.tables) == "table" and #m.tables or 0, "table")),
    src.trusted and string.format("signed by trusted key %s, every block checked before step 2", src.trusted.key_id)
    or "not signed or no --trust: nothing proves who made it")
end

-- The database the app uses once this run is through.
function Run:app_db()
  local r = self.r
  return r.swap and r.database or r.new_db
end

-- The app's URLs (pooled, and direct for pg_dump and the like) of that
-- database; the password registered with the log's redaction, the record
-- keeps them without it. Returns the pooled URL with its password.
function Run:pooled_url()
  if not self.pooled then
    local r, n = self.r, self.neon
    self.pooled = n:connection_uri(r.branch_id, r.endpoint_id, self:app_db(), r.role, true)
    r.app_url = neon.protect(self.pooled)
    r.direct_url = neon.protect(n:connection_uri(r.branch_id, r.endpoint_id, self:app_db(), r.role, false))
  end
  return self.pooled
end

-- 2-8. The steps -------------------------------------------------------------

function nr.create(run)
  local r = run.r
  -- a database of this run's name is this run's (created before a crash)
  if run.neon:database(r.branch_id, r.new_db) then return end
  run.neon:create_database(r.branch_id, r.new_db, r.owner)
end

function nr.recreate(run)
  local r = run.r
  log.info("restoring again into a fresh %s (the previous attempt did not finish)", r.new_db)
  run.neon:delete_database(r.branch_id, r.new_db)
  run.neon:create_database(r.branch_id, r.new_db, r.owner)
end

-- Ends the other sessions on database `db` (lib.database, each logged
-- once): Neon refuses to rename a database in use. Connected to it as the
-- role; our own session ends before the API call.
local function end_sessions(run, db, seen)
  local r = run.r
  local url = run.neon:connection_uri(r.branch_id, r.endpoint_id, db, r.role, false)
  neon.protect(url)
  local c <close> = database.connect(url)
  database.terminate_sessions(c, db, seen)
end

-- Renames through the API; a rename already made (a run stopped before it
-- could record it) is taken as done; sessions that come back are ended
-- again, a few times.
local function rename(run, from, to)
  local n, branch = run.neon, run.r.branch_id
  if not n:database(branch, from) and n:database(branch, to) then
    log.info("database %s is already named %s", from, to)
    return
  end
  local seen = {}
  for attempt = 1, 5 do
    end_sessions(run, from, seen)
    local ok, err = pcall(n.rename_database, n, branch, from, to)
    if ok then return end
    if attempt == 5 or not tostring(err):find("accessed by other users", 1, true) then error(err, 0) end
    proc.sleep(0.2 * attempt)
  end
end

function nr.rename_live(run) rename(run, run.r.database, run.r.old_db) end
function nr.rename_new(run) rename(run, run.r.new_db, run.r.database) end

function nr.set_secret(run)
  run.r.secrets_version = run.fly:set_secrets{ DATABASE_URL = run:pooled_url() }
end

function nr.deploy(run)
  local r = run.r
  r.machines = run.fly:deploy(r.secrets_version, tonumber(run.o.lease_wait))
  if r.machines == 0 then
    log.warn("app %s has no machines: DATABASE_URL stays staged for its next deploy", r.fly_app)
  end
end

function nr.rewrite_env_file(run)
  envfile.set(run.r.env_file, "DATABASE_URL", run:pooled_url())
end

function nr.drop_old(run)
  local r = run.r
  run.neon:delete_database(r.branch_id, r.swap and r.old_db or r.database)
end

-- Where things are, for an error after the swap ---------------------------------

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
    local app_db = r.swap and r.database or r.new_db
    lines[#lines + 1] = s.secret == "done" and string.format("the Fly app %s's DATABASE_URL names %s%s", r.fly_app,
      app_db, (s.deploy == "done" or r.stage) and "" or " but is not deployed to its machines yet")
      or string.format("the Fly app %s's DATABASE_URL is unchanged", r.fly_app)
  end
  if r.env_file then
    lines[#lines + 1] = string.format("%s is %s", r.env_file, s.env_file == "done" and "rewritten" or "unchanged")
  end
  return table.concat(lines, "; ")
end

-- Where a --rollback that failed stopped (it can be run again: each of
-- its changes is made only when it is still to do).
local function rollback_state(r)
  local s = r.steps
  local out = { (s.swap_in == "done" or s.swap_out == "done") and "the databases are not renamed back yet"
    or string.format("database %s is the previous one again (the restored copy is %s)", r.database, r.new_db) }
  if r.fly_app and s.secret == "done" then
    out[#out + 1] = string.format("the Fly app %s's DATABASE_URL is not set back yet", r.fly_app)
  end
  if r.env_file and s.env_file == "done" then out[#out + 1] = r.env_file .. " is not rewritten back yet" end
  return table.concat(out, "; ")
end

-- A failure before the swap: the new database goes (the live one first put
-- back under its name if it was moved); returns what the error should say.
local function undo_before_swap(run)
  local r, n = run.r, run.neon
  if r.steps.swap_out == "done" then
    local ok, err = pcall(rename, run, r.old_db, r.database)
    if not ok then
      return string.format("%s; putting %s back under its name failed too (%s). Finish with 'pgvault neon-restore "
        .. "--resume', or undo with 'pgvault neon-restore --rollback'", say_state(r), r.old_db, tostring(err))
    end
    r.steps.swap_out = nil
  end
  local ok, existed = pcall(n.delete_database, n, r.branch_id, r.new_db)
  if not ok then
    run:save()
    return string.format("%s is unchanged, but deleting the new database %s failed (%s): delete it in the Neon "
      .. "Console", r.database, r.new_db, tostring(existed))
  end
  r.steps.create, r.steps.restore, r.steps.swap_out, r.steps.swap_in = nil, nil, nil, nil
  run:save()
  local same = { "database " .. r.database }
  if r.fly_app then same[#same + 1] = "the Fly app " .. r.fly_app end
  if r.env_file then same[#same + 1] = r.env_file end
  local list = #same == 1 and (same[1] .. " is as it was")
    or (table.concat(same, ", ", 1, #same - 1) .. " and " .. same[#same] .. " are as they were")
  return string.format("%s%s ('pgvault neon-restore --resume' starts again)",
    existed and string.format("the new database %s was deleted; ", r.new_db) or "", list)
end

-- Closing the run: after success the record says finished; after an error
-- it is undone before the swap and the message says where things are.
function Run:close(err)
  if self.closed then return end
  self.closed = true
  local r = self.r
  if err == nil and self.ran then
    r.current, r.finished_at = nil, naming.iso8601()
    self:save()
  elseif err ~= nil and self.ran then
    local where
    if r.steps.swap_in ~= "done" and r.steps.secret ~= "done" then
      local ok, msg = pcall(pgvault.uninterrupted, undo_before_swap, self)
      where = ok and msg or ("cleaning up failed too (" .. tostring(msg) .. "): " .. say_state(r))
    else
      where = say_state(r) .. ". Finish with 'pgvault neon-restore --resume', or undo with 'pgvault neon-restore "
        .. "--rollback'"
    end
    if pgvault.is_error(err) then
      err.message = string.format("step %s failed (%s). %s", tostring(r.current), err.message, where)
    else
      log.error("step %s failed. %s", tostring(r.current), where)
    end
  elseif err ~= nil and self.rolling_back then
    local where = rollback_state(r) .. ": run 'pgvault neon-restore --rollback' again to finish it"
    if pgvault.is_error(err) then
      err.message = string.format("--rollback failed (%s). %s", err.message, where)
    else
      log.error("--rollback failed. %s", where)
    end
  end
  if self.neon then self.neon:close() end
  if self.fly then self.fly:close() end
end
Run.__close = Run.close

-- --dry-run -------------------------------------------------------------------

-- What the record says was done, for --dry-run with --resume or --rollback.
local function recorded(path, r)
  local names = {}
  for _, name in ipairs(nr.STEPS) do
    if r.steps[name] then names[#names + 1] = name .. " " .. r.steps[name] end
  end
  return path .. ": " .. (#names > 0 and table.concat(names, ", ") or "no step recorded")
    .. (r.finished_at and (", finished at " .. r.finished_at) or "")
    .. (r.rolled_back and ", rolled back" or "")
end

local function plan_steps(run, out)
  local r = run.r
  local P = "/projects/" .. r.project
  local DB = P .. "/branches/" .. r.branch_id .. "/databases"
  local function add(fmt, ...) out[#out + 1] = string.format(fmt, ...) end
  local function uri(db, pooled)
    add("     GET %s/connection_uri?branch_id=%s&endpoint_id=%s&database_name=%s&role_name=%s&pooled=%s", P,
      r.branch_id, r.endpoint_id, db, r.role, pooled and "true" or "false")
  end
  local function finished(step) return r.steps[step] == "done" end
  if not finished("create") then
    add("2. create database %s on branch %s, owner %s, and wait for its operations", r.new_db, r.branch, r.owner)
    add("     POST %s %s", DB, json.encode({ database = { name = r.new_db, owner_name = r.owner } }))
    add("     GET %s/operations/{id} until each one has finished", P)
  end
  if not finished("restore") then
    add("3. restore %s into it through the direct host %s (%s): size, SHA-256 and row counts checked against "
      .. "the manifest; the privileges and settings of %s carried over", r.backup or r.src, r.host,
      run.backup_info or "opened when it runs", r.database)
  end
  if not r.swap then
    add("4. no swap (--no-swap): %s keeps its name and the app is pointed at %s", r.database, r.new_db)
  elseif not (finished("swap_out") and finished("swap_in")) then
    add("4. swap names (the sessions on each database ended first, each logged)")
    add("     PATCH %s/%s %s", DB, r.database, json.encode({ database = { name = r.old_db } }))
    add("     PATCH %s/%s %s", DB, r.new_db, json.encode({ database = { name = r.database } }))
  end
  local app_db = run:app_db()
  if not r.fly_app then
    add("5. no Fly app (--fly-app): no secret is set")
  else
    if not finished("secret") then
      add("5. set the Fly app %s's DATABASE_URL to the pooled URL of %s (%s)", r.fly_app, app_db,
        neon.pooled_host(r.host))
      uri(app_db, true)
      add("     POST /v1/apps/%s/secrets {\"values\":{\"DATABASE_URL\":\"<that URL>\"}}", r.fly_app)
    end
    if r.stage then
      add("6. not deployed (--stage): 'fly secrets deploy -a %s' deploys it later", r.fly_app)
    elseif not finished("deploy") then
      add("6. deploy it to the app's machines as 'fly secrets deploy' does (a stopped machine is not started)")
      add("     GET /v1/apps/%s/machines; for each machine POST …/machines/{id}/lease, then GET …/machines/{id}, "
        .. "POST …/machines/{id} {\"config\":…,\"min_secrets_version\":N}, GET …/machines/{id}/wait, DELETE "
        .. "…/machines/{id}/lease", r.fly_app)
    end
  end
  if r.env_file and not finished("env_file") then add("7. rewrite DATABASE_URL in %s", r.env_file) end
  local old = r.swap and r.old_db or r.database
  if r.drop_old and not finished("drop_old") then
    add("8. delete the previous database %s", old)
    add("     DELETE %s/%s", DB, old)
  elseif not r.drop_old then
    add("8. keep the previous database as %s ('pgvault neon-restore --resume --drop-old' deletes it later)", old)
  end
end

-- --dry-run's text: what was resolved, then each step still to do with
-- the API calls it makes.
function Run:plan()
  local r = self.r
  local out = {}
  if self.o.resume then out[1] = recorded(self.path, r) end
  out[#out + 1] = "neon-restore --dry-run: nothing was changed; without --dry-run it would:"
  out[#out + 1] = string.format("1. resolved: Neon project %s, branch %s (%s), database %s (owner %s), read-write "
    .. "endpoint %s", r.project, r.branch, r.branch_id, r.database, r.owner, r.endpoint_id)
  plan_steps(self, out)
  out[#out + 1] = "each step recorded in " .. self.path
  return table.concat(out, "\n")
end

-- The summary ---------------------------------------------------------------------

function Run:summary()
  local r = self.r
  self:pooled_url()
  local out = {
    string.format("restored %s into Neon database %s (branch %s, project %s)", r.backup or r.src, self:app_db(),
      r.branch, r.project),
    "  row counts checked: " .. plural(r.row_counts_checked or 0, "table"),
  }
  local old = r.swap and r.old_db or r.database
  if r.steps.drop_old == "done" then
    out[#out + 1] = "  previous database " .. old .. " deleted"
  else
    out[#out + 1] = string.format("  previous database %s %s (delete it with: pgvault neon-restore --resume "
      .. "--drop-old)", r.swap and "kept as" or "left as it was:", old)
  end
  out[#out + 1] = "  app URL (pooled): " .. r.app_url
  out[#out + 1] = "  direct URL (pg_dump, pg_restore, psql): " .. r.direct_url
  if r.fly_app then
    local deployed = r.stage and string.format("staged (deploy it with 'fly secrets deploy -a %s')", r.fly_app)
      or r.machines == 0 and "staged: the app has no machines, its next deploy takes it"
      or "deployed to " .. plural(r.machines or 0, "machine")
    out[#out + 1] = string.format("  Fly app %s: DATABASE_URL set (secrets version %d), %s", r.fly_app,
      r.secrets_version, deployed)
  end
  if r.env_file then out[#out + 1] = "  " .. r.env_file .. ": DATABASE_URL rewritten" end
  return table.concat(out, "\n")
end

-- --rollback ------------------------------------------------------------------

-- Puts the previous database back under its name (the restored one goes
-- back to <db>_restore_<stamp>, kept), DATABASE_URL back to the previous
-- database's pooled URL (deployed unless the run staged it; removed again
-- when the app had none), and the env file the same way.
-- What --rollback has to undo of run record `r`: a list of sentences.
local function undo_list(r)
  local s, out = r.steps, {}
  if s.swap_in == "done" or s.swap_out == "done" then
    out[#out + 1] = string.format("rename the databases back (%s to %s, %s to %s)", r.database, r.new_db, r.old_db,
      r.database)
  end
  if r.fly_app and s.secret == "done" then
    out[#out + 1] = (r.had_secret == false and string.format("remove the Fly app %s's DATABASE_URL again", r.fly_app)
      or string.format("point the Fly app %s's DATABASE_URL back at %s", r.fly_app, r.database))
      .. (r.stage and "" or " and deploy it")
  end
  if r.env_file and s.env_file == "done" then out[#out + 1] = "rewrite DATABASE_URL in " .. r.env_file .. " back" end
  return out
end

function nr.rollback(o)
  check_modes(o)
  local path, r = newest_state()
  local todo = undo_list(r)
  if o.dry_run then
    return print(recorded(path, r) .. "\n--rollback would " .. (r.rolled_back and "do nothing: it was rolled back"
      or #todo == 0 and "do nothing: the run changed nothing that is still in place" or table.concat(todo, "; ")))
  end
  if r.rolled_back then
    return print(string.format("%s was rolled back already: %s is the previous database", path, r.database))
  end
  if r.steps.drop_old == "done" then
    usage("%s deleted the previous database (--drop-old): there is nothing to roll back to", path)
  end
  local run <close> = setmetatable({ o = o, keys = api_keys(o), path = path, r = r, rolling_back = true }, Run)
  if #todo > 0 then clients(run) end
  local n, f = run.neon, run.fly
  if r.steps.swap_in == "done" then rename(run, r.database, r.new_db) end
  if r.steps.swap_out == "done" then rename(run, r.old_db, r.database) end
  r.steps.swap_in, r.steps.swap_out = nil, nil
  run:save()
  local url = #todo > 0 and n:connection_uri(r.branch_id, r.endpoint_id, r.database, r.role, true)
  if url then neon.protect(url) end
  if f and r.steps.secret == "done" then
    -- an app that had no DATABASE_URL before gets none again
    local v = f:set_secrets{ DATABASE_URL = r.had_secret ~= false and url }
    if not r.stage then f:deploy(v, tonumber(o.lease_wait)) end
    r.steps.secret, r.steps.deploy = nil, nil
  end
  if r.env_file and r.steps.env_file == "done" then envfile.set(r.env_file, "DATABASE_URL", url) end
  r.steps.env_file, r.rolled_back = nil, true
  run:save()
  if #todo == 0 then
    return print(string.format("nothing to roll back: %s changed nothing that is still in place (%s is as it was); "
      .. "it is marked rolled back, so --resume will not go on with it", path, r.database))
  end
  print(string.format("rolled back: %s is the previous database again%s%s", r.database,
    f and string.format(" and the Fly app %s's DATABASE_URL names it", r.fly_app) or "",
    r.steps.restore == "done" and ("; the restored copy is kept as " .. r.new_db) or ""))
end

return nr
