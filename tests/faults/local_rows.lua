-- The local rows of the fault matrix (format: tests/faults/matrix.lua): a
-- full disk (a small tmpfs) where the backup or a restore's temporary
-- file goes, a read-only destination, and TMPDIR pointing nowhere.
local t = require "harness.testing"
local h = require "harness.env"
local proc = require "pgvault.proc"

local rows = {}

local function add(row) rows[#rows + 1] = row end

local FULL = "exit 1, one line naming the file and \"No space left on device\"; its temporary file removed, "
  .. "nothing under a final name"

-- Disk full -------------------------------------------------------------------

for _, op in ipairs({ "backup_dir", "nightly" }) do
  add({ op = op, fault = "disk full", at = "the destination (a 1 MiB tmpfs)", outcome = "fails",
    message = (op == "nightly" and "nightly faults failed at backup: .*" or "") .. "No space left on device",
    short = op == "backup_dir",
    holds = FULL .. (op == "nightly" and "; the lock released" or ""),
    setup = function(ctx) ctx.target = h.mount_tmpfs("1m") end })
end

-- A restore with --jobs keeps the archive's table of contents in a
-- temporary directory (lib.streamed_restore): TMPDIR is a tmpfs filled up
-- beforehand (the filler goes before the checks).
for _, op in ipairs({ "restore_dir", "restore_bucket" }) do
  add({ op = op, fault = "disk full", at = "TMPDIR (a full tmpfs) under restore --jobs 2", outcome = "fails",
    message = "No space left on device", short = op == "restore_bucket",
    holds = FULL .. "; the live database untouched, no other database left",
    setup = function(ctx)
      ctx.tmp = h.mount_tmpfs("1m")
      proc.run({ "sh", "-c", 'dd if=/dev/zero of="$0/filler" bs=4k 2>/dev/null; true', ctx.tmp })
      ctx.args[#ctx.args + 1] = "--jobs"
      ctx.args[#ctx.args + 1] = "2"
    end,
    after = function(ctx) os.remove(ctx.tmp .. "/filler") end })
end

-- Read-only destination ----------------------------------------------------------

local READ_ONLY = "exit 1 at once, one line naming the directory; nothing written, nothing removed"

for _, op in ipairs({ "backup_dir", "nightly" }) do
  add({ op = op, fault = "a read-only destination", at = "the destination directory", outcome = "fails",
    message = op == "nightly"
      and "nightly faults failed at lock: cannot open the lock file /%S+: Read%-only file system"
      or "cannot write to /%S+: check its permissions",
    short = op == "nightly", holds = READ_ONLY,
    setup = function(ctx) ctx.target = h.mount_tmpfs("1m", { ro = true }) end })
end

add({ op = "prune", fault = "a read-only destination", at = "the destination directory", outcome = "fails",
  message = "Read%-only file system", short = true, holds = READ_ONLY,
  cluster = function(ctx) ctx.target = h.mount_tmpfs("64m") end,
  setup = function(ctx)
    local r = proc.run({ "mount", "-o", "remount,ro", ctx.target })
    assert(r.code == 0, r.stderr)
  end })

-- The name taken -------------------------------------------------------------------

-- Files of someone else's under the names a backup of the next seconds
-- would take first: the backup takes the next free name (STAMP-2_…), and
-- they are as they were.
local function names_taken(ctx)
  ctx.taken = {}
  local now = os.time()
  for s = -1, 20 do
    local name = os.date("!%Y%m%d%H%M%S", now + s) .. "_faults.backup.zst"
    ctx.taken[name] = "someone else's file " .. s .. "\n"
    h.write(ctx.target .. "/" .. name, ctx.taken[name])
  end
end

local function names_kept(ctx)
  for name, text in pairs(ctx.taken) do
    local ok, got = pcall(h.read, ctx.target .. "/" .. name)
    t.eq(ok and got, text, ctx.name .. ": " .. name .. " is as it was")
    os.remove(ctx.target .. "/" .. name)
  end
end

for _, op in ipairs({ "backup_dir", "nightly" }) do
  add({ op = op, fault = "the backup's name taken by a file", at = "the destination directory",
    outcome = "completes", short = op == "backup_dir",
    holds = "completes under the next free name (`STAMP-2_SUFFIX`); the file under the name is untouched",
    setup = names_taken, after = names_kept,
    check = function(ctx, r) t.match(r.stdout, "%d+%-2_faults%.backup%.zst", ctx.name .. ": the next name") end })
end

-- Permission denied ---------------------------------------------------------------

-- pgvault runs as nobody (setpriv) and the destination is root's, 0755.
local function as_nobody(ctx)
  for _, d in ipairs({ ctx.dir, ctx.tmp }) do proc.run({ "chmod", "1777", d }) end
  local d = ctx.base
  while d and d ~= "" and d ~= "/" do
    proc.run({ "chmod", "o+x", d })
    d = d:match("^(.*)/[^/]*$")
  end
  ctx.wrap = { "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--" }
end

for _, op in ipairs({ "backup_dir", "nightly" }) do
  add({ op = op, fault = "permission denied (EACCES)", at = "the destination directory", outcome = "fails",
    message = op == "nightly" and "nightly faults failed at lock: cannot open the lock file /%S+: Permission denied"
      or "cannot write to /%S+: check its permissions", short = op == "backup_dir",
    holds = READ_ONLY, setup = as_nobody })
end

-- TMPDIR missing ---------------------------------------------------------------------

local function no_tmpdir(ctx) ctx.env.TMPDIR = ctx.base .. "/no-such-directory" end

for _, op in ipairs({ "backup_dir", "backup_bucket", "restore_bucket", "nightly" }) do
  add({ op = op, fault = "TMPDIR names no directory", at = "start", outcome = "completes", short = op == "nightly",
    holds = "completes: a backup and a streamed restore need no temporary file", setup = no_tmpdir })
end

add({ op = "restore_dir", fault = "TMPDIR names no directory", at = "start, with restore --jobs 2",
  outcome = "fails", message = "cannot create a temporary directory in %S+/no%-such%-directory", short = false,
  holds = "exit 1, one line naming the directory; the new database dropped, the live one untouched",
  setup = function(ctx)
    no_tmpdir(ctx)
    ctx.args[#ctx.args + 1] = "--jobs"
    ctx.args[#ctx.args + 1] = "2"
  end })

return rows
