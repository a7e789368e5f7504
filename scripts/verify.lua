-- check that a backup is whole: every byte of every table decoded and counted
--
-- The procedure, step by step. Copy this file to change it ('pgvault scripts
-- --copy verify DIR', then 'pgvault --scripts DIR verify …'); the mechanics
-- are in scripts/lib/verify.lua. README "Customising a workflow" lists what
-- each step offers.
local cli = require "lib.cli"
local trust = require "lib.trust"
local verify = require "lib.verify"

-- The options (--help shows them; add your own with cli.with_options).
-- With --env NAME the environment's settings (identity, S3, trust) fill in
-- what the flags leave out.
local spec = require("lib.config").cli(cli.with_options(verify.CLI, trust.TRUST_OPTIONS))
local o = require("lib.config").apply(cli.parse(arg, spec), spec)
require("lib.source").check_choosing(o.SRC, o) -- --database only with …/latest
local job = verify.plan(o)

-- The backup: a file, '-' or a pipe (read once), DIR/latest or s3://…; its
-- manifest (unless --no-manifest) and its layers, from its first bytes.
local src <close> = verify.open(job)

-- Who made it (--trust KEY.pub, PGVAULT_TRUST; else a warning), encrypted
-- means encrypted, and the manifest's private part opened with -i.
trust.authenticate(job, src)

-- Every byte through these stages, in this order. A plain archive file
-- with no manifest is read directly instead, its data blocks in parallel.
local r = verify.read_file(job, src) or verify.read(job, src, {
  src:reader(),             -- the file, or the object streamed from the bucket
  trust.verifier(src),      -- each block checked against the manifest's SHA-256 before it goes on
  verify.digest("stored"),  -- SHA-256 of the bytes as stored
  verify.thread(job, verify.layers_apart(job, src)), -- reading and that digest on one core, the layers on
                            -- the next (not when zstd's own threads decode the frames: this thread is one of them)
  verify.unwrap(job, src),  -- age decryption and zstd decompression (frames decoded on threads of its own)
  verify.thread(job, not verify.decoded_apart(job, src)), -- the archive digest and the parser on a third
                            -- (not when zstd's own threads decode the frames: a hand-off would only copy)
  verify.digest("plain"),   -- SHA-256 of the archive
  verify.archive(job),      -- every TOC entry and data block decoded, COPY rows counted
  verify.discard(),
})

-- Sizes, digests and per-table row counts against the manifest.
verify.compare(job, src, r)

-- --restore-into URL: restore into that scratch database, compare row
-- counts, drop it.
verify.drill(job, src, r)

-- The summary; exits 1 if anything did not match.
verify.report(job, src, r)
