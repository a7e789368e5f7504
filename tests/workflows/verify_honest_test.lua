-- covers: scripts/verify.lua scripts/lib/verify.lua scripts/lib/source.lua
-- verify says only what is so (issue 12): "matches <manifest>" only when
-- the manifest check passed (it was printed before the check failed); a
-- pipe, a FIFO, <(…) or '-' is read once (a good backup was reported
-- damaged: verify read 64 bytes and opened it again); JSON lists are
-- arrays and sizes integers; an --inserts archive's rows are counted.
local t = require "harness.testing"
local h = require "harness.env"
local fx = require "fixtures.pgdmp"
local cjson = require "cjson"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"

local dir = h.tmpdir()
local url = fx.sample_db("verify_honest_test", 500)
local path = fx.pg_dump(url, dir .. "/a.dump", { "-Z0" })

local function verify(args, opts) return h.pgvault(args, opts or { timeout = 120 }) end

t.test("'matches' only when the manifest matched", function()
  local b = h.pgvault({ "-q", "backup", "--db", url, "--to", dir })
  t.eq(b.code, 0, b.stderr)
  local backup = b.stdout:match("([^\n]*)\n?$")
  local r = verify({ "verify", backup })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "\n  matches " .. backup:gsub("%p", "%%%0") .. "%.manifest%.json\n")
  local m = h.read(backup .. ".manifest.json")
  fs.remove(backup .. ".manifest.json")
  h.write(backup .. ".manifest.json", (m:gsub('"rows": 500', '"rows": 501')))
  r = verify({ "verify", backup })
  t.eq(r.code, 1)
  t.no_match(r.stdout, "matches", "not said when it does not match")
  t.match(r.stderr, "rows of public%.t1: the manifest says 501, the backup has 500")
  r = verify({ "verify", "--json", backup })
  t.eq(r.code, 1)
  local j = cjson.decode(r.stdout)
  t.eq(j.matches, false)
  t.eq(j.ok, false)
end)

-- TMPDIR names a directory that does not exist: a temporary copy would fail
-- the run, so '-' is shown to stream (under valgrind, which needs a TMPDIR,
-- an empty one). A FIFO or <(…) is copied once as it is read: opening it a
-- second time would wait for a writer that may have finished.
local NO_TMP = { TMPDIR = h.valgrind and h.tmpdir() or dir .. "/does-not-exist" }

t.test("a pipe, a FIFO, <(…) and '-' are read once: a good backup verifies", function()
  local data = h.read(path)
  local r = verify({ "verify", "-" }, { stdin = data, timeout = 120, env = NO_TMP })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "^%-: archive ")
  r = h.run({ "bash", "-c", '"$1" verify <(cat "$2")', "bash", h.bin, path })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "^/dev/fd/%d+: archive .* 3 tables, 503 rows")
  t.eq(h.run({ "mkfifo", dir .. "/fifo" }).code, 0)
  local writer = proc.spawn({ "sh", "-c", 'cat "$1" > "$2"', "sh", path, dir .. "/fifo" })
  r = verify({ "verify", "--json", dir .. "/fifo" })
  t.eq(writer:wait(10), 0)
  writer:close()
  t.eq(r.code, 0, r.stderr)
  t.eq(cjson.decode(r.stdout).archive.totals.rows, 503)
  -- a zstd stream through a pipe too
  r = h.run({ "bash", "-c", 'zstd -q -c "$2" | "$1" verify -', "bash", h.bin, path }, { env = NO_TMP })
  t.eq(r.code, 0, r.stderr)
  -- the drill reads the backup twice: a pipe is copied once, then read from the copy
  r = h.run({ "bash", "-c", '"$1" verify <(cat "$2") --restore-into "$3"', "bash", h.bin, path,
    h.pg().url("verify_honest_drill") })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "restored into verify_honest_drill %(dropped again%)")
end)

t.test("--json: lists are arrays, sizes are integers", function()
  local r = verify({ "verify", "--json", path })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, '"layers":%["pgdmp"%]')
  t.no_match(r.stdout, "%d%.0[,}%]]", "no 34387.0")
  local b = h.pgvault({ "-q", "backup", "--db", url, "--to", h.tmpdir() })
  local backup = b.stdout:match("([^\n]*)\n?$")
  r = verify({ "verify", "--json", backup })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, '"problems":%[%]', "an empty list is []")
  t.match(r.stdout, '"matches":true')
  local empty = h.createdb("verify_honest_empty")
  local e = fx.pg_dump(empty, dir .. "/empty.dump", { "-Z0" })
  r = verify({ "verify", "--json", e })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, '"tables":%[%]', "no tables: []")
  h.dropdb("verify_honest_empty")
end)

t.test("an --inserts archive's rows are counted", function()
  local ins = fx.pg_dump(url, dir .. "/inserts.dump", { "-Z0", "--inserts" })
  local r = verify({ "verify", ins })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, " 503 rows,", "not 0 rows: " .. r.stdout)
  h.dropdb("verify_honest_test")
end)
