-- The signal rows of the fault matrix (format: tests/faults/matrix.lua):
-- SIGINT, SIGTERM and SIGKILL at a random point (seeded; the seed is
-- printed) of a backup, a restore and a nightly run. SIGINT and SIGTERM:
-- exit 130 and nothing left; SIGKILL: whatever the killed run left (a
-- temporary file, its name's reservation, an unfinished upload, a lock, a
-- half-restored database), the next run completes and sweeps it.
local rows = {}

local HOLDS = {
  INT = "exit 130, one line; children stopped, temporary files removed, the upload aborted, the half-restored "
    .. "database dropped, the lock released: nothing left, the live database untouched",
  KILL = "exit 137, and what the killed run left (a `.partial` file, its name's reservation, an unfinished "
    .. "upload, the lock, a half-restored database) never shows as a backup; the next run on this machine "
    .. "completes and sweeps it",
}
HOLDS.TERM = HOLDS.INT

local SHORT = { ["backup_bucket KILL"] = true, ["restore_dir TERM"] = true, ["nightly INT"] = true,
  ["restore_bucket KILL"] = true }

for _, op in ipairs({ "backup_dir", "backup_bucket", "restore_dir", "restore_bucket", "nightly" }) do
  for _, sig in ipairs({ "INT", "TERM", "KILL" }) do
    rows[#rows + 1] = { op = op, fault = "SIG" .. sig, at = "a random point", signal = sig,
      outcome = sig == "KILL" and "killed" or "interrupted", message = "interrupted", holds = HOLDS[sig],
      short = SHORT[op .. " " .. sig] }
  end
end

return rows
