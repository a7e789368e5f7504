-- restore a backup into a new Neon database, swap it in, point the Fly app at it
--
-- The procedure, step by step (README "Restoring production on Neon" says
-- what each step does on your accounts). Copy this file to change it
-- ('pgvault scripts --copy neon-restore DIR', then 'pgvault --scripts DIR
-- neon-restore …'); the mechanics are in scripts/lib/neon_restore.lua and
-- scripts/lib/restore.lua. Each run:step(NAME, …) is recorded in the state
-- file .pgvault/neon-restore-<stamp>.json: --resume skips the steps done.
local cli = require "lib.cli"
local config = require "lib.config"
local nr = require "lib.neon_restore"
local pgvault = require "pgvault"
local restore = require "lib.restore"
local trust = require "lib.trust"

-- The options (--help shows them), over the configuration file's (--env).
local o = config.apply(cli.parse(arg, nr.CLI), nr.CLI)

-- --rollback: the previous database back under its name, DATABASE_URL and
-- the env file back (the newest run).
if o.rollback then return nr.rollback(o) end

-- 1. Resolve the Neon project, branch (default: the project's default
-- branch), database, its owner and the branch's read-write endpoint; check
-- that the env file can be rewritten and the Fly token opens the app.
-- With --resume: the newest run's record. Nothing changes yet. If a step
-- below fails before the swap, closing the run deletes the new database.
local run <close> = nr.start(o)

-- The backup, opened as restore opens it (a file, DIR/latest or s3://…;
-- …/latest: the newest complete backup of this database, or of
-- --source-database; its manifest read and checked), with pg_restore found
-- and the server reached through the live database's direct URL, which is
-- locked against a second restore.
local job <close> = run:needs("restore") and restore.plan(run:restore_options()) or nil
local src <close> = job and restore.open(job) or nil
if src then
  -- Who made it, as restore checks it: with --trust KEY.pub (or
  -- PGVAULT_TRUST, or `trust` in the configuration) its manifest must be
  -- signed by a trusted key, name this very object and record every
  -- digest; then the whole backup is read once and checked block by block
  -- before anything changes. Without, a warning says nothing proved it.
  trust.authenticate(job, src)
  nr.check_backup(run, src)
  run:backup(src)
end

if o.dry_run then return print(run:plan()) end

-- 2. The new database <db>_restore_<stamp> on the branch, with the same
-- owner, created through the Neon API; its operations waited for.
run:step("create", nr.create)

-- 3. Restored with restore's own steps through the direct (non-pooled)
-- host: the stored bytes checked against the manifest as they stream into
-- pg_restore, then the row counts, then the live database's privileges,
-- settings and comment given to the new one.
run:step("restore", function(_, before)
  if before then nr.recreate(run) end -- an attempt that did not finish
  local db = restore.into(job, src, run.r.new_db)
  restore.load(job, db, {
    src:reader(),                 -- the file, or the object streamed from the bucket
    trust.verifier(src),          -- each block held until its SHA-256 matches the signed manifest's
    restore.checksum(src),        -- size and SHA-256 against the manifest
    restore.unwrap(job, src),     -- age decryption and zstd decompression, as the layers are
    restore.progress(),           -- the meter, on a terminal
    restore.pg_restore(job, src, db),
  })
  run.r.row_counts_checked = restore.check_rows(job, src, db)
  restore.carry_over(job, db)
end)

-- 4. The swap (not with --no-swap): the live database renamed to
-- <db>_old_<stamp>, then the new one to <db>, through the API; the sessions
-- on each are ended first (logged), since Neon cannot rename a database in
-- use. A Ctrl-C waits for both renames.
if run.r.swap then
  pgvault.critical(function()
    run:step("swap_out", nr.rename_live)
    run:step("swap_in", nr.rename_new)
  end)
end

-- 5. The Fly app's DATABASE_URL secret: the pooled URL of the database the
-- app uses now (other secrets untouched).
-- 6. Deployed as 'fly secrets deploy' does: each machine leased, updated to
-- the new secrets version, waited for, released (not with --stage).
if run.r.fly_app then
  run:step("secret", nr.set_secret)
  if not run.r.stage then run:step("deploy", nr.deploy) end
end

-- 7. DATABASE_URL rewritten in the env file, so the local copy agrees.
if run.r.env_file then run:step("env_file", nr.rewrite_env_file) end

-- 8. The previous database deleted, only with --drop-old (now, or later
-- with --resume --drop-old).
if run.r.drop_old then run:step("drop_old", nr.drop_old) end

print(run:summary())
