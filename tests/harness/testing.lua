-- The test library: test registration, assertions that say expected vs
-- actual with file:line, and skips (which fail the run when CI=true).
local testing = { tests = {}, teardowns = {} }

local FAIL = {}   -- marker metatable of assertion failures
local SKIP = {}   -- marker metatable of skips

local function where(level)
  local info = debug.getinfo(level + 1, "Sl")
  if not info then return "?" end
  return info.short_src .. ":" .. (info.currentline or 0)
end

local function fail(msg, level)
  error(setmetatable({ message = msg, where = where(level + 1) }, FAIL), 0)
end

local function show(v)
  if type(v) == "string" then
    if #v > 400 then return string.format("%q", v:sub(1, 400)) .. string.format(" ... (%d bytes)", #v) end
    return string.format("%q", v)
  end
  if type(v) == "table" then
    local ok, pretty = pcall(require, "lib.pretty")
    if ok then
      local s = pretty.format(v)
      return #s > 2000 and (s:sub(1, 2000) .. " ...") or s
    end
  end
  return tostring(v)
end

local function deep_equal(a, b, path)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then
    return false, path
  end
  for k, v in pairs(a) do
    local ok, p = deep_equal(v, b[k], path .. "." .. tostring(k))
    if not ok then return false, p end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "." .. tostring(k) end
  end
  return true
end

function testing.test(name, fn)
  testing.tests[#testing.tests + 1] = { name = name, fn = fn }
end

-- Registers clean-up (dropping a database, stopping a server) that runs
-- after the file's tests, whatever they did, last registered first. It is
-- not a test: it never counts as a pass; an error in it counts as a failure.
function testing.teardown(fn)
  testing.teardowns[#testing.teardowns + 1] = fn
end

function testing.eq(actual, expected, what)
  local ok, path = deep_equal(actual, expected, "")
  if not ok then
    fail(string.format("%s: expected %s, got %s%s", what or "values differ", show(expected), show(actual),
      path ~= "" and (" (first difference at " .. path .. ")") or ""), 2)
  end
end

function testing.neq(actual, unexpected, what)
  if deep_equal(actual, unexpected, "") then
    fail(string.format("%s: expected anything but %s", what or "values equal", show(unexpected)), 2)
  end
end

function testing.ok(cond, what)
  if not cond then fail((what or "condition") .. ": expected a true value, got " .. show(cond), 2) end
  return cond
end

function testing.match(s, pattern, what)
  if type(s) ~= "string" or not s:find(pattern) then
    fail(string.format("%s: expected a string matching %q, got %s", what or "no match", pattern, show(s)), 2)
  end
end

function testing.no_match(s, pattern, what)
  if type(s) == "string" and s:find(pattern) then
    fail(string.format("%s: expected no match for %q in %s", what or "unexpected match", pattern, show(s)), 2)
  end
end

-- Runs fn, which must raise; the message (tostring of the error) must
-- contain `pattern` (a Lua pattern) when given. Returns the error value.
function testing.raises(fn, pattern, what)
  local ok, err = pcall(fn)
  if ok then fail((what or "call") .. ": expected an error, got success", 2) end
  if getmetatable(err) == FAIL then error(err, 0) end
  if pattern and not tostring(err):find(pattern) then
    fail(string.format("%s: expected an error matching %q, got %s", what or "wrong error", pattern,
      show(tostring(err))), 2)
  end
  return err
end

function testing.skip(why)
  error(setmetatable({ message = why, where = where(2) }, SKIP), 0)
end

-- Runs the teardowns (newest first); returns how many failed.
function testing.run_teardowns()
  local failed = 0
  for i = #testing.teardowns, 1, -1 do
    local ok, err = xpcall(testing.teardowns[i], function(e)
      if getmetatable(e) == FAIL then return (e.where and (e.where .. ": ") or "") .. e.message end
      return debug.traceback(tostring(e), 2)
    end)
    if not ok then
      failed = failed + 1
      io.stdout:write(string.format("  FAIL  teardown: %s\n", err))
    end
  end
  testing.teardowns = {}
  return failed
end

-- Runs every registered test; returns passed, failed, skipped and lines.
function testing.run_all(filter)
  local passed, failed, skipped = 0, 0, 0
  for _, t in ipairs(testing.tests) do
    if not filter or t.name:find(filter, 1, true) then
      local t0 = os.clock()
      local ok, err = xpcall(t.fn, function(e)
        if getmetatable(e) == FAIL or getmetatable(e) == SKIP then return e end
        return { message = tostring(e), trace = debug.traceback("", 2) }
      end)
      local dt = os.clock() - t0
      if ok then
        passed = passed + 1
        io.stdout:write(string.format("  ok    %s (%.2fs cpu)\n", t.name, dt))
      elseif getmetatable(err) == SKIP then
        skipped = skipped + 1
        io.stdout:write(string.format("  skip  %s: %s\n", t.name, err.message))
      else
        failed = failed + 1
        io.stdout:write(string.format("  FAIL  %s\n        %s%s\n", t.name,
          err.where and (err.where .. ": ") or "", err.message))
        if err.trace and os.getenv("PGVAULT_TEST_VERBOSE") then io.stdout:write(err.trace, "\n") end
      end
      io.stdout:flush()
    end
  end
  return passed, failed, skipped
end

return testing
