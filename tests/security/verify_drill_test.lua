-- covers: scripts/lib/verify.lua scripts/lib/drill.lua
-- verify --restore-into --trust reads the backup twice: once to check it,
-- once for the restore drill. A backup replaced between the two (same size,
-- a hostile archive whose SQL makes the restoring role create a superuser)
-- must be refused at its first block by the drill's read too, before
-- pg_restore sees a byte. Regression test: the drill's read had no block
-- check, and the hostile SQL ran.
local t = require "harness.testing"
local h = require "harness.env"
local fs = require "pgvault.fs"
local trust = require "lib.trust"
local verify = require "lib.verify"
local f = require "security.sign_fixtures"

local MARKER = "pgvault_pwned_verify_drill"
local SCRATCH = "verify_drill_scratch"

local keys = h.tmpdir()
assert(h.pgvault({ "keygen", "--sign", "-o", keys .. "/sign.key" }).code == 0)
local TRUST = keys .. "/sign.key.pub"

local src_url = h.createdb("verify_drill_src")
h.psql(src_url, "CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 3000) g;")
local d = h.tmpdir()
local r0 = h.pgvault({ "-q", "backup", "--db", src_url, "--to", d, "--sign", keys .. "/sign.key" })
assert(r0.code == 0, r0.stderr)
local PATH = r0.stdout:match("([^\n]+)\n$")

f.drop_role(MARKER)
local work = h.tmpdir()
local HOSTILE = f.pad_zstd(f.zstd(f.hostile_archive(work, "verify_drill_hostile", MARKER), work .. "/h.zst"),
  fs.stat(PATH).size)

t.test("a backup replaced between verify's read and its restore drill: refused at block 0, no SQL run", function()
  local job = verify.plan { src = PATH, restore_into = f.superuser_url(SCRATCH), trust = { TRUST } }
  local src <close> = verify.open(job)
  trust.authenticate(job, src)
  local r = verify.read(job, src, { src:reader(), trust.verifier(src), verify.digest("stored"),
    verify.unwrap(job, src), verify.digest("plain"), verify.archive(job), verify.discard() })
  verify.compare(job, src, r)
  t.eq(#job.problems, 0, table.concat(job.problems, "; "))
  -- the writer of the directory (or bucket) swaps the file now
  t.eq(#h.read(HOSTILE), fs.stat(PATH).size)
  fs.remove(PATH)
  h.write(PATH, h.read(HOSTILE))
  t.raises(function() verify.drill(job, src, r) end, "block 0 %(bytes 0 to %d+%) differs")
  t.eq(f.role_exists(MARKER), false, "the hostile archive's SQL did not run")
  t.eq(#f.databases(SCRATCH), 0, "the scratch database was dropped")
end)

f.drop_role(MARKER)
h.dropdb("verify_drill_src")
