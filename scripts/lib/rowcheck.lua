-- Per-table row counts of a restored database against the counts the
-- archive's COPY data held (recorded in the manifest or read by the
-- verifier), shared by restore and the restore drill of verify.
--   rowcheck.compare(conn, {{schema=, name=, rows=}, ...}) -> problems, checked
-- A batch of tables per query: one round trip instead of one per table,
-- which matters over a long link. Tables that belong to an extension are
-- its configuration tables (pg_extension_config_dump, as PostGIS's
-- spatial_ref_sys): the dump holds only the rows the extension does not
-- create itself, so they need at least that many rows, not exactly.
-- Counts are FROM ONLY: a table's COPY data holds its own rows, not those
-- of tables that inherit from it.
-- Each problem is {schema=, name=, got= (nil: no such table), want=, member=}.
local rowcheck = {}

local BATCH = 100

local function relation(c, t) return c:quote_ident(t.schema) .. "." .. c:quote_ident(t.name) end

function rowcheck.compare(c, tables)
  local member = {}
  for _, r in ipairs(c:query([[SELECT n.nspname AS schema, c.relname AS name FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
    WHERE c.relkind IN ('r', 'p')]])) do
    member[r.schema .. "\0" .. r.name] = true
  end
  local got = {}
  for first = 1, #tables, BATCH do
    local last = math.min(first + BATCH - 1, #tables)
    local cols = {}
    for i = first, last do
      cols[#cols + 1] = string.format("(SELECT count(*) FROM ONLY %s) AS c%d", relation(c, tables[i]), i)
    end
    local ok, rows = pcall(c.query, c, "SELECT " .. table.concat(cols, ", "))
    for i = first, last do
      if ok then
        got[i] = rows[1]["c" .. i]
      else -- a table is missing: one at a time, to say which
        local tok, trows = pcall(c.query, c, "SELECT count(*) AS n FROM ONLY " .. relation(c, tables[i]))
        got[i] = tok and trows[1].n or nil
      end
    end
  end
  local problems = {}
  for i, t in ipairs(tables) do
    local is_member = member[t.schema .. "\0" .. t.name] or false
    local n = got[i]
    if n == nil or (is_member and n < t.rows) or (not is_member and n ~= t.rows) then
      problems[#problems + 1] = { schema = t.schema, name = t.name, got = n, want = t.rows, member = is_member }
    end
  end
  return problems, #tables
end

-- "schema.table has N rows, expected M" (or "at least M", or "no table").
function rowcheck.describe(p, expected)
  return string.format("%s.%s has %s rows, %s %s%d", p.schema, p.name:gsub("[\r\n]", " "),
    p.got and tostring(p.got) or "no table", expected or "expected",
    p.member and "(an extension's configuration table) at least " or "", p.want)
end

return rowcheck
