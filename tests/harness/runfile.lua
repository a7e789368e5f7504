-- Runs one test file in this process and writes its counts to the file
-- named by PGVAULT_TEST_RESULT. Started by tests/run.lua, one per file.
package.path = "tests/?.lua;" .. package.path
local testing = require "harness.testing"
local env = require "harness.env"

local file, filter = arg[1], arg[2]
local chunk, err = loadfile(file)
local passed, failed, skipped
if not chunk then
  io.stdout:write("  FAIL  (load) " .. tostring(err) .. "\n")
  passed, failed, skipped = 0, 1, 0
else
  local ok, lerr = pcall(chunk)
  if not ok then
    io.stdout:write("  FAIL  (top level) " .. tostring(lerr) .. "\n")
    passed, failed, skipped = 0, 1, 0
  else
    passed, failed, skipped = testing.run_all(filter)
  end
end
failed = failed + testing.run_teardowns()
env.cleanup()
local out = os.getenv("PGVAULT_TEST_RESULT")
if out then
  local f = assert(io.open(out, "w"))
  f:write(string.format("%d %d %d\n", passed, failed, skipped))
  f:close()
end
os.exit(failed == 0 and 0 or 1, true)
