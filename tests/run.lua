-- The test runner: `bin/pgvault run tests/run.lua [FILTER...]`.
-- Starts PostgreSQL and S3 once, runs every tests/**/*_test.lua whose path
-- contains a FILTER (all when none) in its own pgvault process, two at a
-- time, prints per-file results and ends with "N passed, N failed, N skipped".
-- With CI=true a skipped test counts as a failure. Services are torn down
-- whatever happens, including on Ctrl-C.
package.path = "tests/?.lua;" .. package.path
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local services = require "harness.services"

local root = fs.getcwd()
local bin = os.getenv("PGVAULT_BIN") or "bin/pgvault"
if bin:sub(1, 1) ~= "/" then bin = root .. "/" .. bin end
local jobs = tonumber(os.getenv("PGVAULT_TEST_JOBS") or "2")
local valgrind = os.getenv("PGVAULT_VALGRIND")
-- A file's time limit; under valgrind every pgvault process runs ten to
-- thirty times slower (h.pgvault already scales its own timeouts).
local file_timeout = tonumber(os.getenv("PGVAULT_TEST_TIMEOUT") or (valgrind and "3600" or "900"))
local in_ci = os.getenv("CI") == "true"

local function discover(dir, out)
  for _, name in ipairs(fs.listdir(dir)) do
    local path = dir .. "/" .. name
    local st = fs.stat(path)
    if st and st.type == "dir" then
      discover(path, out)
    elseif name:match("_test%.lua$") then
      out[#out + 1] = path
    end
  end
  return out
end

local filters = {}
for i = 1, #arg do filters[#filters + 1] = arg[i] end
local files = {}
for _, f in ipairs(discover("tests", {})) do
  local keep = #filters == 0
  for _, pat in ipairs(filters) do
    if f:find(pat, 1, true) then keep = true end
  end
  if keep then files[#files + 1] = f end
end
table.sort(files)
if #files == 0 then
  io.stderr:write("no test files match\n")
  print("0 passed, 1 failed, 0 skipped")
  os.exit(1)
end

local base = fs.tmpdir("pgvault-test")
local passed, failed, skipped = 0, 0, 0
local stop_services

local function run_files(env_path)
  local queue = {}
  for i, f in ipairs(files) do queue[i] = f end
  local running = {}
  local next_id = 0
  local function start(file)
    next_id = next_id + 1
    local out = string.format("%s/out-%d.txt", base, next_id)
    local result = string.format("%s/result-%d.txt", base, next_id)
    local tmp = string.format("%s/tmp-%d", base, next_id)
    fs.mkdir_p(tmp)
    fs.chmod(tmp, 493)
    local argv = { "sh", "-c", 'exec "$@" >"$PGVAULT_TEST_OUT" 2>&1', "sh" }
    if valgrind then
      for _, a in ipairs({ "valgrind", "-q", "--error-exitcode=99", "--leak-check=full",
        "--errors-for-leak-kinds=definite", "--suppressions=" .. root .. "/tests/valgrind.supp" }) do
        argv[#argv + 1] = a
      end
    end
    for _, a in ipairs({ bin, "run", "tests/harness/runfile.lua", file }) do argv[#argv + 1] = a end
    argv.env = {
      PGVAULT_TEST_ENV = env_path, PGVAULT_TEST_RESULT = result, PGVAULT_TEST_OUT = out,
      PGVAULT_BIN = bin, TMPDIR = tmp, PGVAULT_HISTORY = tmp .. "/history",
      -- children inherit no other variable of ours (host/child.c's allow-list)
      PGVAULT_VALGRIND = valgrind or false, PGVAULT_TEST_VERBOSE = os.getenv("PGVAULT_TEST_VERBOSE") or false,
      -- the fault matrix: all rows (make faults), the seed of its signal points
      PGVAULT_FAULTS = os.getenv("PGVAULT_FAULTS") or false,
      PGVAULT_FAULTS_SEED = os.getenv("PGVAULT_FAULTS_SEED") or false,
    }
    argv.stdout = "inherit"
    running[#running + 1] = { file = file, handle = proc.spawn(argv), out = out, result = result,
      started = proc.now() }
  end
  while #queue > 0 or #running > 0 do
    while #running < jobs and #queue > 0 do start(table.remove(queue, 1)) end
    proc.sleep(0.05)
    for i = #running, 1, -1 do
      local r = running[i]
      local timed_out = proc.now() - r.started > file_timeout
      if timed_out then r.handle:kill("KILL") end
      if timed_out or not r.handle:running() then
        table.remove(running, i)
        local code = r.handle:wait()
        r.handle:close()
        local text = fs.exists(r.out) and fs.read_file(r.out) or ""
        local counts = fs.exists(r.result) and fs.read_file(r.result) or ""
        local p, f, s = counts:match("(%d+) (%d+) (%d+)")
        p, f, s = tonumber(p) or 0, tonumber(f) or 0, tonumber(s) or 0
        if code ~= 0 and f == 0 then
          -- died without reporting (crash, sanitizer, valgrind error, timeout)
          f = 1
          text = text .. string.format("  FAIL  %s exited with code %d%s\n", r.file, code,
            timed_out and " (timed out)" or "")
        end
        if in_ci and s > 0 then
          text = text .. string.format("  FAIL  %d skipped test(s): with CI=true a skip is a failure\n", s)
          f, s = f + s, 0
        end
        passed, failed, skipped = passed + p, failed + f, skipped + s
        io.stdout:write(string.format("%s %s (%d passed, %d failed, %d skipped, %.1fs)\n",
          f == 0 and "PASS" or "FAIL", r.file, p, f, s, proc.now() - r.started))
        io.stdout:write(text)
        io.stdout:flush()
      end
    end
  end
end

local ok, err = pcall(function()
  local t0 = proc.now()
  local desc, stop, env_path = services.start(base, root)
  stop_services = stop
  io.stdout:write(string.format("services: PostgreSQL 15 on 127.0.0.1:%d, S3 on %s (%.1fs)\n",
    desc.pg.port, desc.s3.endpoint, proc.now() - t0))
  run_files(env_path)
end)
if stop_services then stop_services() end
pcall(fs.remove_tree, base)
if not ok then
  io.stderr:write("test run aborted: " .. tostring(err) .. "\n")
  failed = failed + 1
end
print(string.format("%d passed, %d failed, %d skipped", passed, failed, skipped))
if not ok and require("pgvault").interrupted() then os.exit(130) end
os.exit(failed == 0 and ok and 0 or 1)
