-- The mechanics of `pgvault nightly` (scripts/nightly.lua reads as the
-- procedure): the run and its steps (a failed step is recorded and the
-- run goes on to its end: the summary, the pings, the lock released), and
-- what each step does with the other modules: lib.backup for the backup,
-- lib.verify for the read-back check, lib.prune, lib.drill.
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local pgvault = require "pgvault"
local json = require "lib.json"
local naming = require "lib.naming"
local retention = require "lib.retention"

local nightly = {}

-- ------------------------------------------------------------------------
-- The run and its steps
-- ------------------------------------------------------------------------

local Run = {}
Run.__index = Run

function nightly.new(o)
  -- Keep the last lines written, for the "fail" ping.
  if type(log.capture) == "function" then log.capture(200) end
  local dest = o.to or "db_backups"
  return setmetatable({ o = o, env = o.settings.env or o.suffix or "local", dest = dest,
    remote = dest:sub(1, 5) == "s3://", started = os.time(), t0 = proc.now(), steps = {}, journal = {},
    failed = nil, interrupted = false }, Run)
end

function Run:note(fmt, ...)
  local line = string.format(fmt, ...)
  self.journal[#self.journal + 1] = os.date("!%H:%M:%S ", os.time()) .. line
  log.info("%s", line)
end

-- Runs one step: fn() returns a short description of what it did. A step
-- is skipped (with why) once the run was interrupted, or when `unless`
-- gives a reason. A failure is recorded, not raised.
function Run:step(name, fn, unless)
  local s = { name = name, status = "ok" }
  self.steps[#self.steps + 1] = s
  local why = self.interrupted and "interrupted" or (unless and unless(self))
  if why then
    s.status, s.detail = "skipped", why
    self:note("%s: skipped (%s)", name, why)
    return
  end
  local t0 = proc.now()
  self:note("%s ...", name)
  local ok, res = pcall(function()
    -- A bucket lock expires (lock_ttl) unless its holder pushes the expiry
    -- on: before each step. A lock taken over meanwhile stops the run here.
    if self.held then self.held:refresh() end
    return fn(self)
  end)
  s.seconds = proc.now() - t0
  if ok then
    s.detail = res
    self:note("%s: done in %.1fs%s", name, s.seconds, res and (": " .. res) or "")
    return
  end
  s.status = "failed"
  s.error = pgvault.is_error(res) and res.message or tostring(res)
  s.kind = pgvault.is_error(res) and res.kind or "internal"
  if s.kind == "interrupted" or pgvault.signalled() then self.interrupted = true end
  self.failed = self.failed or s
  self:note("%s: FAILED: %s", name, s.error)
end

-- Runs the steps (fn); an error that escapes them (Ctrl-C landing between
-- two steps) is recorded like a failed step. Then `finally` runs to its
-- end whatever signal arrived meanwhile: the summary, the pings and the
-- lock's release are how an interrupted run is heard of and cleaned up.
function Run:procedure(fn, finally)
  local ok, err = pcall(fn)
  if not ok then
    local interrupted = pgvault.signalled() or (pgvault.is_error(err) and err.kind == "interrupted")
    if interrupted then self.interrupted = true end
    if not self.failed and not interrupted then
      self.failed = { name = "run", status = "failed", kind = pgvault.is_error(err) and err.kind or "internal",
        error = pgvault.is_error(err) and err.message or tostring(err) }
    end
  end
  if pgvault.signalled() then self.interrupted = true end
  return pgvault.uninterrupted(finally)
end

function Run:ok(name)
  for _, s in ipairs(self.steps) do
    if s.name == name then return s.status == "ok" end
  end
  return false
end

-- Why a step cannot run: the first of the named steps that did not
-- succeed (false or nil names are ignored), or nil.
function Run:blocked(...)
  for i = 1, select("#", ...) do
    local n = select(i, ...)
    if n and not self:ok(n) then return "the " .. n .. " did not succeed" end
  end
  return nil
end

-- Another run holds the lock: that run reports to the monitor, not this one.
function Run:lock_busy()
  local s = self.steps[1]
  return s and s.name == "lock" and s.status == "failed" and s.kind == "exists"
end

-- The last log lines for the "fail" ping: the host's own tail of every
-- log line when it keeps one, else this run's journal.
function Run:tail(n)
  n = n or 100
  local lines = type(log.tail) == "function" and log.tail() or self.journal
  local out = {}
  for i = math.max(1, #lines - n + 1), #lines do out[#out + 1] = lines[i] end
  return out
end

-- The one-line summary and the table behind --json.
function Run:summary()
  local s = { environment = self.env, destination = self.dest, ok = self.failed == nil and not self.interrupted,
    interrupted = self.interrupted, started = naming.iso8601(self.started), seconds = proc.now() - self.t0,
    steps = json.array(), backups = json.array(self.backups or {}) }
  local parts = {}
  for _, st in ipairs(self.steps) do
    s.steps[#s.steps + 1] = { name = st.name, status = st.status, detail = st.detail, error = st.error,
      seconds = st.seconds }
    if st.name ~= "lock" then
      parts[#parts + 1] = st.name .. " " .. (st.status == "ok" and (st.detail or "ok") or
        st.status == "skipped" and ("skipped (" .. st.detail .. ")") or "FAILED")
    end
  end
  if self.failed then s.error = self.failed.name .. ": " .. self.failed.error end
  s.line = string.format("nightly %s: %s in %.1fs: %s", self.env,
    self.interrupted and "interrupted" or (s.ok and "ok" or "FAILED"), s.seconds, table.concat(parts, "; "))
  if self.failed then s.line = s.line .. " (" .. s.error .. ")" end
  return s
end

-- ------------------------------------------------------------------------
-- Steps
-- ------------------------------------------------------------------------

-- What lib.backup.run is given (each database's, with --all-databases).
local function backup_options(run, s3opts)
  local o = run.o
  return { db = o.db, to = run.dest, suffix = o.suffix or run.env, compress = o.compress, level = o.level,
    pg_bin = o.pg_bin, recipient = o.recipient, recipients_file = o.recipients_file, sign = o.sign,
    sign_password_file = o.sign_password_file, s3 = s3opts, time = run.started }
end

-- Before anything runs (no lock, no ping): the settings a typo could
-- spoil are checked, so that a misconfigured run says so at once (exit
-- 2); a directory destination is made, since its lock lives in it.
function nightly.prepare(run, s3opts)
  if not run.o.db then pgvault.raise("usage", "no database: give --db URL or db = ... in the environment") end
  require("lib.backup").options(backup_options(run, s3opts))
  if not run.remote then fs.mkdir_p((run.dest:gsub("^file://", ""))) end
end

-- Takes the environment's lock. The bucket is the first thing a run talks
-- to: when it cannot be reached at all, say what to check.
function nightly.lock(run, s3opts, opts)
  local ok, held = pcall(require("lib.lock").acquire, { to = run.dest, env = run.env, wait = opts.wait, s3 = s3opts,
    command = "nightly", ttl = opts.ttl })
  if ok then
    run.held = held
    return held
  end
  if pgvault.is_error(held) and held.kind == "s3" and not held.http_status then
    held.message = held.message .. ": check the endpoint and that the bucket is reachable from here"
  end
  error(held, 0)
end

local function record(run, b)
  local m = b.manifest
  run.done[#run.done + 1] = b
  run.backups[#run.backups + 1] = { path = b.path, database = m.database, bytes = b.result.stored.bytes,
    encrypted = m.encryption ~= nil, signed = run.o.sign ~= nil }
end

-- Backs up the database, or with --all-databases every database of its
-- server (each under its own suffix: the database in the name) and the
-- roles and grants (lib.globals: a database that fails does not stop the
-- others; the step fails naming them). Returns what the summary says.
function nightly.backup(run, s3opts)
  local o = run.o
  run.backups, run.done = {}, {}
  if o.all_databases then
    local globals = require "lib.globals"
    local res = globals.backup_all(backup_options(run, s3opts))
    for _, b in ipairs(res.backups) do record(run, b) end
    run.globals = res.globals
    globals.check(res)
  else
    record(run, require("lib.backup").run(backup_options(run, s3opts)))
  end
  run.last = run.done[#run.done]
  local bytes = run.globals and run.globals.bytes or 0
  for _, b in ipairs(run.backups) do bytes = bytes + b.bytes end
  if not o.all_databases then
    return string.format("%s (%s)", run.last.path:match("[^/]+$"), require("lib.cli").bytes(bytes))
  end
  return string.format("%d databases and the roles (%s)", #run.done, require("lib.cli").bytes(bytes))
end

-- The public keys the read-back check trusts: --trust (and PGVAULT_TRUST);
-- a run that signs and names none checks with KEY.pub, the public half that
-- 'pgvault keygen --sign KEY' wrote beside its key.
function nightly.trusted(run)
  local o = run.o
  if run.trusted ~= nil then return run.trusted or nil end
  run.trusted = o.trust or false
  if #(o.trust or {}) > 0 or (os.getenv("PGVAULT_TRUST") or "") ~= "" or not o.sign then return o.trust end
  if fs.exists(o.sign .. ".pub") then
    log.info("the read-back check takes the signature's public key from %s.pub (give --trust KEY.pub to name it)",
      o.sign)
    run.trusted = { o.sign .. ".pub" }
  else
    log.warn("the read-back check cannot check the signatures: no --trust KEY.pub and no %s.pub", o.sign)
  end
  return run.trusted or nil
end

-- Read-back check of one backup in the bucket, as `pgvault verify s3://…`
-- does it (lib.verify: every byte decrypted, decompressed and counted
-- against the manifest; signed by a trusted key). Without an identity an
-- encrypted backup can only be checked as stored: its size, digests and
-- signature (lib.globals.read). Returns the rows counted, or nil.
local function readback_one(run, s3opts, path, trusted)
  local o = run.o
  local ok, res = pcall(function()
    if #(o.identity or {}) == 0 and path:match("%.age$") then
      return require("lib.globals").read { src = path, s3 = s3opts, trust = trusted, stored_only = true }
    end
    if require("lib.globals").parse(path) then
      require("lib.globals").read { src = path, s3 = s3opts, trust = trusted,
        identities = require("lib.layers").read_identities(o.identity) }
      return 0
    end
    return require("lib.verify").run({ src = path, identity = o.identity, trust = trusted, s3 = s3opts })
      .archive.totals.rows
  end)
  if not ok then
    if pgvault.is_error(res) and res.kind ~= "interrupted" then
      res.message = "the copy in the bucket did not verify: " .. res.message
    end
    error(res, 0)
  end
  return res
end

function nightly.readback(run, s3opts)
  local o = run.o
  local endpoint = o.endpoint_url or os.getenv("AWS_ENDPOINT_URL") or ""
  local paths, total = {}, 0
  for _, b in ipairs(run.done) do
    paths[#paths + 1], total = b.path, total + b.result.stored.bytes
  end
  if run.globals then paths[#paths + 1], total = run.globals.path, total + run.globals.bytes end
  if endpoint:find("backblazeb2.com", 1, true) then
    log.info("the read-back check downloads %s from Backblaze B2: downloads above B2's free allowance cost "
      .. "money (--no-readback, or readback = false, skips it)", require("lib.cli").bytes(total))
  end
  local trusted = nightly.trusted(run)
  local rows, bytes_only = 0, false
  for _, path in ipairs(paths) do
    local n = readback_one(run, s3opts, path, trusted)
    if n then rows = rows + n else bytes_only = true end
  end
  local signed = require("lib.trust").keys(trusted) and ", signatures good" or ""
  if bytes_only then
    return "stored bytes match" .. signed .. " (no identity to decrypt with: give identity = ... for the full check)"
  end
  return string.format("every byte read back and checked (%d rows)%s", rows, signed)
end

-- Prunes the destination by the environment's rules (none: nothing but
-- stale leftovers goes).
function nightly.prune(run, s3opts)
  local prune = require "lib.prune"
  local policy = retention.policy(run.o)
  prune.announce(policy)
  local inv = prune.inventory(run.dest, s3opts)
  local plan = prune.plan(inv, policy, { grace = prune.grace_seconds(run.o.grace), trust = nightly.trusted(run) })
  for _, b in ipairs(plan.damaged) do
    log.warn("prune left %s alone and did not count it as the newest: %s", b.name, tostring(b.problem))
  end
  local done = prune.apply(plan, inv)
  run.pruned = { kept = #plan.keep, removed = done.backups, orphans = done.orphans, uploads = done.uploads }
  local swept = {}
  local function count(n, what, how)
    if n > 0 then swept[#swept + 1] = string.format("%d %s%s %s", n, what, n == 1 and "" or "s", how) end
  end
  count(done.orphans, "leftover", "removed")
  count(done.uploads, "unfinished upload", "aborted")
  local rest = #swept > 0 and ("; " .. table.concat(swept, ", ")) or ""
  if retention.empty(policy) then return "no keep rules: no backup removed" .. rest end
  return string.format("%d kept, %d removed%s", #plan.keep, done.backups, rest)
end

-- ------------------------------------------------------------------------
-- The restore drill, on its schedule
-- ------------------------------------------------------------------------

local function state_path(run) return run.dest:gsub("/+$", "") .. "/.pgvault-" .. run.env .. ".state.json" end

-- What earlier runs recorded in the destination (the last drill): {} when nothing.
function nightly.read_state(run, s3opts)
  local path = state_path(run)
  local ok, text
  if run.remote then
    local client <close> = require("pgvault.s3").client(s3opts)
    ok, text = pcall(client.get, client, path)
  else
    ok, text = pcall(fs.read_file, (path:gsub("^file://", "")))
  end
  local dok, st = pcall(json.decode, ok and text or "{}")
  return dok and type(st) == "table" and st or {}
end

function nightly.write_state(run, s3opts, st)
  local text = json.encode(st)
  if run.remote then
    local client <close> = require("pgvault.s3").client(s3opts)
    client:put(state_path(run), text, { content_type = "application/json" })
  else
    fs.write_file((state_path(run):gsub("^file://", "")), text, { mode = 420 })
  end
end

local function iso_week(t) return os.date("!%G-W%V", t) end

-- Why the drill does not run now, or nil when it is due: --drill-every week
-- runs it on the first run of each ISO week, day on the first of each day.
function nightly.drill_skip(run, st, now)
  local every = run.o.drill_every or "week"
  now = now or os.time()
  if every == "never" then return "--drill-every never" end
  local last = tonumber(st.last_drill)
  if not last then return nil end
  if every == "day" and os.date("!%Y-%m-%d", last) == os.date("!%Y-%m-%d", now) then
    return "done today (" .. (st.last_drill_backup or "?") .. ")"
  end
  if every == "week" and iso_week(last) == iso_week(now) then
    return "done this week, " .. os.date("!%Y-%m-%d", last)
  end
  return nil
end

-- Restores the new backup into a scratch database, compares row counts
-- with the archive, drops it (lib.drill).
local function drill_one(run, s3opts, b)
  local o = run.o
  local dump = require "pgvault.dump"
  local layers = require "lib.layers"
  local trust = require "lib.trust"
  local url = o.drill_db
  if not url or #run.done > 1 then
    local db = b.manifest.database or "db"
    url = dump.conninfo(o.drill_db or o.db, { dbname = "pgvault_drill_" .. naming.cut(db, 63 - 14), password = true })
  end
  -- The backup as a restore reads it: with trusted keys, signed, and each
  -- block checked before pg_restore sees it.
  local src <close> = require("lib.source").open(b.path, { s3 = s3opts, manifest = "required" })
  local job = { trust = nightly.trusted(run), identities = layers.read_identities(o.identity) }
  trust.authenticate(job, src)
  if layers.has(src.layers, "age") and #job.identities == 0 then
    pgvault.raise("usage", "the backup is encrypted and no identity is configured: the drill cannot restore it "
      .. "(give identity = ... or --drill-every never)")
  end
  local res = require("lib.drill").run { src = b.path, source = function() return src:reader() end,
    verifier = trust.verifier(src), layers = src.layers, identity_files = o.identity, url = url,
    summary = b.result.archive }
  if #res.problems > 0 then
    pgvault.raise("verify", "restore drill of " .. b.path .. ": " .. table.concat(res.problems, "; "))
  end
  return res
end

function nightly.drill(run, s3opts)
  local tables, names = 0, {}
  run.drilled = {}
  for _, b in ipairs(run.done) do
    local res = drill_one(run, s3opts, b)
    run.drilled[#run.drilled + 1] = { database = res.database, tables = res.tables, seconds = res.seconds }
    tables, names[#names + 1] = tables + res.tables, res.database
  end
  return string.format("restored into %s and dropped: row counts of %d tables match", table.concat(names, ", "),
    tables)
end

return nightly
