-- README's table "What happens when …", rendered from the fault matrix's
-- rows (tests/faults/*_rows.lua), so that the two cannot disagree: rows of
-- one fault with the same `holds` text share a line, naming every
-- operation and injection point. tests/faults/readme_faults_test.lua
-- checks README against it; `bin/pgvault run tests/faults/table.lua
-- --write` rewrites README's copy.
local readme = {}

readme.FILES = { "s3", "pg", "local", "signal" }
readme.BEGIN = "<!-- the fault table: rendered from tests/faults/*_rows.lua by tests/faults/table.lua -->"
readme.END = "<!-- end of the fault table -->"

local OPS = {
  backup_dir = "backup to a directory", backup_bucket = "backup to a bucket", restore_dir = "restore from a directory",
  restore_bucket = "restore from a bucket", nightly = "nightly", prune = "prune of a directory",
  prune_bucket = "prune of a bucket",
}

local function cell(s) return (tostring(s):gsub("|", "\\|")) end

local function add_once(list, seen, v)
  if not seen[v] then
    seen[v] = true
    list[#list + 1] = v
  end
end

-- The table's lines, header first, from the rows of `files` (names of
-- tests/faults/NAME_rows.lua, default readme.FILES); `load` reads one.
function readme.lines(load, files)
  local groups, order = {}, {}
  for _, file in ipairs(files or readme.FILES) do
    for _, row in ipairs(load(file)) do
      assert(row.holds, "row without holds: " .. row.op .. ": " .. row.fault)
      assert(OPS[row.op], "no README name for operation " .. row.op)
      local key = row.fault .. "\0" .. row.holds
      local g = groups[key]
      if not g then
        g = { fault = row.fault, holds = row.holds, ops = {}, seen_ops = {}, ats = {}, seen_ats = {} }
        groups[key] = g
        order[#order + 1] = g
      end
      add_once(g.ops, g.seen_ops, OPS[row.op])
      add_once(g.ats, g.seen_ats, row.at)
    end
  end
  local out = { "| operation | fault | injected at | what happens |", "|---|---|---|---|" }
  for _, g in ipairs(order) do
    out[#out + 1] = string.format("| %s | %s | %s | %s |", cell(table.concat(g.ops, ", ")), cell(g.fault),
      cell(table.concat(g.ats, ", ")), cell(g.holds))
  end
  return out
end

-- README's text with the table between the markers replaced by `lines`;
-- and the lines found there now.
function readme.splice(text, lines)
  local first = text:find(readme.BEGIN, 1, true)
  local last = text:find(readme.END, 1, true)
  if not first or not last then return nil, nil end
  local body_start = first + #readme.BEGIN + 1
  local current = {}
  for l in text:sub(body_start, last - 1):gmatch("[^\n]+") do current[#current + 1] = l end
  return text:sub(1, body_start - 1) .. table.concat(lines, "\n") .. "\n" .. text:sub(last), current
end

return readme
