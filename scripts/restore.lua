-- restore a backup into a new database, check it, then swap it in
--
-- The procedure, step by step. Copy this file to change it ('pgvault scripts
-- --copy restore DIR', then 'pgvault --scripts DIR restore …'): reorder, drop
-- or add a step here; the mechanics are in scripts/lib/restore.lua. README
-- "Customising a workflow" lists what each step offers.
local cli = require "lib.cli"
local restore = require "lib.restore"
local trust = require "lib.trust"

-- The options (--help shows them; add your own with cli.with_options).
-- With --env NAME the environment's settings (keys, S3, pg_bin, trust) fill
-- in what the flags leave out; never the database: a restore names it.
local spec = require("lib.config").cli(cli.with_options(cli.with_options(restore.CLI, trust.TRUST_OPTIONS),
  require("lib.globals").RESTORE_OPTIONS))
local o = require("lib.config").apply(cli.parse(arg, spec), spec, { db = false })
require("lib.source").check_choosing(o.SRC, o) -- --database only with …/latest

-- Check the options, find pg_restore, reach the server and lock the target
-- database against a second restore. Nothing is created yet.
local job <close> = restore.plan(o)

-- The backup: a file, DIR/latest, or s3://… (…/latest: the newest complete
-- backup of this database); its manifest is read and checked, its layers
-- recognised by their first bytes.
local src <close> = restore.open(job)

-- Who made it: with --trust KEY.pub (or PGVAULT_TRUST) its manifest must be
-- signed by a trusted key, name this very object and record every digest;
-- without, a warning says that nothing proved it. An encrypted backup must
-- be age-encrypted; its manifest's private part is opened with -i.
trust.authenticate(job, src)

-- --in-place: read what can be read (a file: all of it; an object: up to
-- its table of contents) before the database is dropped.
restore.precheck(job, src)

-- --globals FILE: the roles and grants (backup --all-databases) applied to
-- the server first, so that the database's owner and grantees exist
-- (lib.globals; checked against its manifest and, with --trust, its signature).
if o.globals then require("lib.globals").restore_step(job) end

-- The new database, made like the one it replaces (or like the backup's
-- source, from the manifest). If a later step fails it is dropped again.
local db <close> = restore.create(job, src)

-- The stored bytes flow through these stages, in this order, into
-- pg_restore (with --jobs N: N sessions loading the tables as their data
-- arrives, lib.streamed_restore; no temporary copy of the backup).
restore.load(job, db, {
  src:reader(),                 -- the file, or the object streamed from the bucket
  trust.verifier(src),          -- each block held until its SHA-256 matches the manifest's
  restore.checksum(src),        -- size and SHA-256 against the manifest
  restore.unwrap(job, src),     -- age decryption and zstd decompression, as the layers are
  restore.progress(),           -- the meter, on a terminal
  restore.pg_restore(job, src, db),
})

-- Per-table row counts against the manifest.
restore.check_rows(job, src, db)

-- The replaced database's privileges, settings, comment and connection
-- limit, which pg_dump leaves out of the archive.
restore.carry_over(job, db)

-- The names swapped (a Ctrl-C waits for the swap to finish); the old
-- database is kept as <db>_old_<stamp>, or dropped with --drop-old.
restore.swap(job, db)

print(restore.summary(job, src, db))
