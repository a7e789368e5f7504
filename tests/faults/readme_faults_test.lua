-- covers: tests/faults/
-- README's table "What happens when …" is the fault matrix's, line for
-- line (tests/faults/readme.lua renders it; `bin/pgvault run
-- tests/faults/table.lua --write` rewrites README's copy).
local t = require "harness.testing"
local h = require "harness.env"
local readme = require "faults.readme"
local matrix = require "faults.matrix"

t.test("README's fault table is the one the rows give", function()
  local want = readme.lines(matrix.rows)
  local _, current = readme.splice(h.read(h.root .. "/README.md"), want)
  t.ok(current, "README.md has the table's markers")
  t.eq(current, want, "README.md's fault table (run: bin/pgvault run tests/faults/table.lua --write)")
end)

t.test("every row says what holds, and names a known operation", function()
  for _, file in ipairs(readme.FILES) do
    for _, row in ipairs(matrix.rows(file)) do
      t.ok(row.holds and row.holds ~= "", file .. ": " .. row.op .. ": " .. row.fault .. ": holds")
      t.ok(matrix.operations[row.op], file .. ": " .. row.op .. " is an operation")
      t.ok(matrix.CODES[row.outcome], file .. ": " .. row.fault .. ": a known outcome")
    end
  end
end)
