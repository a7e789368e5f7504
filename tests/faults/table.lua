-- README's fault table from the fault matrix's rows (tests/faults/readme.lua):
--   bin/pgvault run tests/faults/table.lua           prints it
--   bin/pgvault run tests/faults/table.lua --write   rewrites README.md's copy
package.path = "tests/?.lua;" .. package.path
local fs = require "pgvault.fs"
local readme = require "faults.readme"

local lines = readme.lines(function(name) return dofile("tests/faults/" .. name .. "_rows.lua") end)
if arg[1] ~= "--write" then
  print(table.concat(lines, "\n"))
  return
end
local text = fs.read_file("README.md")
local new = readme.splice(text, lines)
if not new then error("README.md has no fault table markers: " .. readme.BEGIN, 0) end
fs.write_file("README.md", new)
print("README.md: the fault table has " .. (#lines - 2) .. " lines")
