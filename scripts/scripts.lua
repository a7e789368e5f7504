-- list the workflows, or copy built-in ones out to edit
local cli = require "lib.cli"
local fs = require "pgvault.fs"
local pgvault = require "pgvault"

local o = cli.parse(arg, {
  usage = "pgvault scripts [--copy NAME]... [DEST]",
  summary = "Lists every workflow with its one-line description. With --copy, writes the built-in\n"
    .. "NAME.lua into the directory DEST (default: the current directory; created if need be) so\n"
    .. "you can edit it and run it with 'pgvault --scripts DEST NAME' or PGVAULT_PATH. A library\n"
    .. "module (lib/NAME, e.g. lib/backup) goes to DEST/lib/NAME.lua, where workflows find it\n"
    .. "first. DEST may be a file name ending in .lua when one workflow is copied.",
  options = {
    { "copy", "c", "NAME", "write the built-in workflow NAME (or library module lib/NAME) out for editing",
      multi = true },
    { "force", "f", false, "with --copy, overwrite existing files" },
  },
  positionals = { { "DEST", "the directory --copy writes into (or a .lua file for one workflow)", optional = true } },
})

local function description(source)
  local first = source:match("^[^\n]*") or ""
  return first:match("^%-%-%s*(.-)%s*$") or ""
end

-- "backup" -> "backup.lua"; "lib/backup" -> "lib/backup.lua"; nil when it
-- is not built in.
local function builtin(name)
  local rel = name:gsub("%.lua$", "")
  local dir, base = rel:match("^(lib)/([^/]+)$")
  rel = dir and (dir .. "/" .. base) or rel:gsub("-", "_")
  if rel:find("/") and not dir then return nil end
  local path = rel .. ".lua"
  return pgvault.embedded(path) and path or nil
end

-- Where each file goes: {from = embedded path, to = file}.
local function targets(names, dest)
  local files = {}
  for _, name in ipairs(names) do
    local path = builtin(name)
    if not path then
      pgvault.raise("usage", "no built-in workflow or library module '" .. name
        .. "' (run 'pgvault scripts' to list the workflows; modules are lib/NAME)")
    end
    files[#files + 1] = { from = path }
  end
  local st = fs.stat(dest)
  local single_file = #files == 1 and not files[1].from:find("/")
    and ((st and st.type ~= "dir") or (not st and dest:match("%.lua$")))
  if single_file then
    files[1].to = dest
    return files
  end
  if st and st.type ~= "dir" then
    pgvault.raise("usage", string.format("DEST %s is not a directory: %s", dest, #files > 1
      and "several files are copied into a directory" or "a library module goes to DEST/lib/"))
  end
  for _, f in ipairs(files) do f.to = dest .. "/" .. f.from end
  return files
end

if #o.copy > 0 then
  local files = targets(o.copy, o.DEST or ".")
  for _, f in ipairs(files) do
    local dir = f.to:match("^(.*)/[^/]*$")
    if dir and dir ~= "" then fs.mkdir_p(dir) end
    local ok, err = pcall(fs.write_file, f.to, pgvault.embedded(f.from), { mode = 420, no_clobber = not o.force })
    if not ok and type(err) == "table" and err.kind == "exists" then
      pgvault.raise("exists", f.to .. " already exists; use --force to overwrite it", { path = f.to })
    elseif not ok then
      error(err, 0)
    end
    print(f.to)
  end
  return
end
if o.DEST then pgvault.raise("usage", "DEST only goes with --copy NAME (see 'pgvault scripts --help')") end

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
