-- covers: tests/harness/testing.lua tests/harness/runfile.lua tests/run.lua
-- The test harness itself: teardown is clean-up, not a test (issue 13:
-- "cleanup" steps counted as passes).
local t = require "harness.testing"
local h = require "harness.env"
local fs = require "pgvault.fs"

-- Runs a test file through runfile.lua; returns "passed failed skipped" and stdout.
local function run_file(source)
  local d = h.tmpdir()
  h.write(d .. "/x_test.lua", source)
  local r = h.run({ h.bin, "run", "tests/harness/runfile.lua", d .. "/x_test.lua" },
    { cwd = h.root, env = { PGVAULT_TEST_RESULT = d .. "/result" } })
  return (fs.exists(d .. "/result") and h.read(d .. "/result") or ""):match("^%S+ %S+ %S+"), r.stdout, d
end

t.test("a teardown runs after the tests and is not counted as a test", function()
  local counts, out = run_file([[
local t = require "harness.testing"
t.teardown(function() io.stdout:write("torn down\n") end)
t.test("one", function() t.ok(true) end)
t.test("two", function() t.ok(false, "fails") end)]])
  t.eq(counts, "1 1 0", out)
  t.match(out, "FAIL  two.*torn down\n$", "after the tests")
end)

t.test("a teardown runs even when the file fails at its top level, and its failure is a failure", function()
  local counts, out = run_file([[
local t = require "harness.testing"
t.teardown(function() t.eq(1, 2, "the teardown's own check") end)
t.test("fine", function() end)
error("top level breaks")]])
  t.eq(counts, "0 2 0", out)
  t.match(out, "FAIL  %(top level%)")
  t.match(out, "FAIL  teardown: .*the teardown's own check")
end)

t.test("teardowns run newest first", function()
  local counts, out = run_file([[
local t = require "harness.testing"
t.teardown(function() io.stdout:write("first registered\n") end)
t.teardown(function() io.stdout:write("second registered\n") end)
t.test("x", function() end)]])
  t.eq(counts, "1 0 0", out)
  t.match(out, "second registered\nfirst registered")
end)
