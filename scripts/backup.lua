-- dump a database into a compressed custom-format archive with a manifest
--
-- The procedure, step by step. Copy this file to change it ('pgvault scripts
-- --copy backup DIR', then 'pgvault --scripts DIR backup …'): reorder, drop
-- or add a step here; the mechanics are in scripts/lib/backup.lua. README
-- "Customising a workflow" lists what each step offers.
local backup = require "lib.backup"
local cli = require "lib.cli"
local config = require "lib.config"
local trust = require "lib.trust"

-- The options (--help shows them; add your own with cli.with_options); with
-- --env NAME, the environment's settings in pgvault.conf.lua fill in what
-- the flags leave out (--sign KEY too: lib.trust's options).
local spec = config.cli(cli.with_options(cli.with_options(backup.CLI, trust.SIGN_OPTIONS),
  require("lib.globals").OPTIONS))
local o = config.apply(cli.parse(arg, spec), spec)

-- --all-databases: every database of the server, each backed up as below
-- (lib.backup.run) under its own name, then the roles and grants beside
-- them; one that fails does not stop the others (lib.globals).
if o.all_databases then return require("lib.globals").run(o) end

-- Check the options, ask the database who it is, find a pg_dump for it.
local job = backup.plan(o)

-- --sign KEY: the signing key, read now, so that a wrong password fails
-- before anything is dumped (lib.trust; README "Signed backups").
local signer <close> = trust.signer(o)

-- Where the backup goes: a directory or s3://BUCKET/PREFIX/. An unfinished
-- backup is removed when `dest` goes out of scope, whatever stopped it.
local dest <close> = backup.destination(job)

-- pg_dump's archive flows through these stages, in this order, into the
-- file or the multipart upload (dest:sink(), always last). The name's
-- .zst and .age follow the stages that run.
local r = backup.pipeline(job, dest, {
  backup.pg_dump(job),     -- pg_dump -Fc (uncompressed unless --compress pg)
  backup.digest("plain"),  -- SHA-256 of the archive that pg_restore reads
  backup.verifier(job),    -- parses the archive as it passes: a damaged dump is never committed
  backup.compressor(job),  -- zstd on every core (--compress zstd, the default)
  backup.encryptor(job),   -- age, to the recipients of -r/-R
  backup.digest("stored"), -- SHA-256 of the bytes as stored
  trust.blocks(job),       -- SHA-256 of each block as stored: a restore checks each before using it
  backup.progress(),       -- the meter, on a terminal
  dest:sink(),             -- the archive, under a name no other backup has
})

-- What the manifest records: sizes, digests, tables and row counts, the
-- database's properties.
local m = backup.manifest(job, dest, r)

-- The block digests recorded; for an encrypted backup, what reveals the
-- schema sealed to its recipients; with --sign, NAME.manifest.json.minisig
-- written beside the archive, before the manifest (change m before this).
trust.seal_and_sign(job, dest, m, r, signer)

-- The manifest, written only if absent, commits the backup.
dest:commit(m)

-- The summary line; the path on stdout.
backup.report(job, dest, r)
print(dest.path)
