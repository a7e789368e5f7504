-- The report of `make coverage`: line coverage of host/ and bindings/ from
-- an lcov tracefile (bin/pgvault run tools/coverage.lua FILE.info), least
-- covered files first, and the source files that no test file declares it
-- covers ("-- covers: path ..." on the first line of each *_test.lua, as
-- pgBackRest's test/define.yaml names the modules each test covers; a path
-- ending in "/" covers everything under it).
local fs = require "pgvault.fs"

local info_path = arg[1] or "build-cov/pgvault.info"
local root = fs.getcwd() .. "/"

local function walk(dir, match, out)
  for _, name in ipairs(fs.listdir(dir)) do
    local path = dir .. "/" .. name
    local st = fs.stat(path)
    if st and st.type == "dir" then
      walk(path, match, out)
    elseif name:match(match) then
      out[#out + 1] = path
    end
  end
  return out
end

-- Per file: lines found and hit, from the tracefile's SF/LF/LH records.
local function read_info(path)
  local files, current = {}, nil
  for line in fs.read_file(path):gmatch("[^\n]+") do
    local sf = line:match("^SF:(.+)$")
    if sf then
      current = { path = sf:sub(1, #root) == root and sf:sub(#root + 1) or sf, found = 0, hit = 0 }
      files[#files + 1] = current
    elseif current then
      local lf, lh = line:match("^LF:(%d+)$"), line:match("^LH:(%d+)$")
      if lf then current.found = tonumber(lf) end
      if lh then current.hit = tonumber(lh) end
    end
  end
  return files
end

-- Every path named by a test's "-- covers:" line; test files without one.
local function declarations()
  local covered, undeclared = {}, {}
  for _, test in ipairs(walk("tests", "_test%.lua$", {})) do
    local any = false
    for line in fs.read_file(test):gmatch("[^\n]*") do
      local list = line:match("^%-%- covers:%s*(.*)$")
      if not list then break end -- the declarations open the file
      any = true
      for p in list:gmatch("%S+") do covered[#covered + 1] = p end
    end
    if not any then undeclared[#undeclared + 1] = test end
  end
  return covered, undeclared
end

local function is_covered(path, covered)
  for _, p in ipairs(covered) do
    if p == path or (p:sub(-1) == "/" and path:sub(1, #p) == p) then return true end
  end
  return false
end

local function pct(hit, found)
  return found > 0 and 100 * hit / found or 100
end

local files = read_info(info_path)
table.sort(files, function(a, b)
  local pa, pb = pct(a.hit, a.found), pct(b.hit, b.found)
  if pa ~= pb then return pa < pb end
  return a.path < b.path
end)
local found, hit = 0, 0
print(string.format("%-36s %7s %7s %7s", "file", "lines", "hit", "cover"))
for _, f in ipairs(files) do
  found, hit = found + f.found, hit + f.hit
  print(string.format("%-36s %7d %7d %6.1f%%", f.path, f.found, f.hit, pct(f.hit, f.found)))
end
print(string.format("%-36s %7d %7d %6.1f%%", "total (host/ and bindings/)", found, hit, pct(hit, found)))

local covered, undeclared = declarations()
local sources = walk("host", "%.c$", {})
walk("bindings", "%.c$", sources)
walk("scripts", "%.lua$", sources)
table.sort(sources)
local missing = {}
for _, s in ipairs(sources) do
  if not is_covered(s, covered) then missing[#missing + 1] = s end
end
print("")
if #missing == 0 then
  print("every source file is declared by a test")
else
  print(string.format("%d source file(s) no test declares it covers:", #missing))
  for _, s in ipairs(missing) do print("  " .. s) end
end
if #undeclared > 0 then
  print(string.format("%d test file(s) without a '-- covers:' line:", #undeclared))
  for _, s in ipairs(undeclared) do print("  " .. s) end
end
