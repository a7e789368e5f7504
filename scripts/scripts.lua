-- list the workflows, or copy a built-in one out to edit
local cli = require "lib.cli"
local fs = require "pgvault.fs"
local pgvault = require "pgvault"

local o = cli.parse(arg, {
  usage = "pgvault scripts [--copy NAME [DEST]]",
  summary = "Lists every workflow with its one-line description. With --copy, writes the\n"
    .. "built-in NAME.lua to DEST (a file or directory; default: the current directory)\n"
    .. "so you can edit it and run it with 'pgvault --scripts DIR NAME' or PGVAULT_PATH.",
  options = {
    { "copy", "c", "NAME", "write the built-in workflow NAME out for editing" },
    { "force", "f", false, "with --copy, overwrite an existing file" },
  },
  positionals = { { "DEST", "where --copy writes (file or directory)", optional = true } },
})

local function description(source)
  local first = source:match("^[^\n]*") or ""
  return first:match("^%-%-%s*(.-)%s*$") or ""
end

if o.copy then
  local name = o.copy:gsub("-", "_"):gsub("%.lua$", "")
  local source = pgvault.embedded(name .. ".lua") or pgvault.embedded(name)
  if not source then
    pgvault.raise("usage", "no built-in workflow '" .. o.copy .. "' (run 'pgvault scripts' to list them)")
  end
  local dest = o.DEST or "."
  local st = fs.stat(dest)
  if st and st.type == "dir" then dest = dest .. "/" .. name:match("[^/]+$") .. ".lua" end
  if fs.exists(dest) and not o.force then
    pgvault.raise("io", dest .. " already exists; use --force to overwrite it")
  end
  fs.write_file(dest, source)
  print(dest)
  return
end

local rows, seen = {}, {}
for _, dir in ipairs(pgvault.script_dirs()) do
  local ok, names = pcall(fs.listdir, dir)
  for _, file in ipairs(ok and names or {}) do
    local name = file:match("^(.+)%.lua$")
    if name and not seen[name] then
      seen[name] = true
      local src = fs.read_file(dir .. "/" .. file)
      rows[#rows + 1] = { name:gsub("_", "-"), description(src) .. "  (" .. dir .. ")" }
    end
  end
end
for _, path in ipairs(pgvault.embedded_list()) do
  local name = path:match("^([^/]+)%.lua$")
  if name and not seen[name] then
    seen[name] = true
    rows[#rows + 1] = { (name:gsub("_", "-")), description(pgvault.embedded(path)) }
  end
end
table.sort(rows, function(a, b) return a[1] < b[1] end)
local width = 0
for _, r in ipairs(rows) do width = math.max(width, #r[1]) end
for _, r in ipairs(rows) do
  print(r[1] .. string.rep(" ", width - #r[1] + 2) .. r[2])
end
