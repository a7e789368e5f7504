-- Command-line parsing for workflows: options, flags, repeatable options,
-- positionals, --help. Misuse raises a "usage" error (exit code 2).
local pgvault = require "pgvault"

local cli = {}

local function key_of(long)
  return (long:gsub("-", "_"))
end

-- Text of --help for a spec.
function cli.help(spec)
  local out = { "usage: " .. (spec.usage or "pgvault COMMAND [options]") }
  if spec.summary then
    out[#out + 1] = ""
    out[#out + 1] = spec.summary
  end
  local rows = {}
  for _, p in ipairs(spec.positionals or {}) do
    rows[#rows + 1] = { "  " .. p[1], p[2] or "" }
  end
  if #rows > 0 then
    out[#out + 1] = ""
    out[#out + 1] = "Arguments:"
  end
  local function flush()
    local width = 0
    for _, r in ipairs(rows) do width = math.max(width, #r[1]) end
    for _, r in ipairs(rows) do
      out[#out + 1] = r[1] .. string.rep(" ", width - #r[1] + 2) .. r[2]
    end
    rows = {}
  end
  flush()
  out[#out + 1] = ""
  out[#out + 1] = "Options:"
  for _, o in ipairs(spec.options or {}) do
    local names = (o[2] and ("-" .. o[2] .. ", ") or "    ") .. "--" .. o[1]
    if o[3] then names = names .. " " .. o[3] end
    local help = o[4] or ""
    if o.multi then help = help .. " (repeatable)" end
    rows[#rows + 1] = { "  " .. names, help }
  end
  rows[#rows + 1] = { "  -h, --help", "show this help" }
  flush()
  if spec.epilog then
    out[#out + 1] = ""
    out[#out + 1] = spec.epilog
  end
  return table.concat(out, "\n") .. "\n"
end

local function usage_error(spec, fmt, ...)
  local cmd = (spec.usage or ""):match("^pgvault%s+(%S+)") or "COMMAND"
  pgvault.raise("usage", string.format(fmt, ...) .. " (see 'pgvault " .. cmd .. " --help')")
end

-- A copy of `spec` with `options` added (a workflow that adds a step adds
-- its options this way: cli.parse(arg, cli.with_options(backup.CLI, {...}))).
function cli.with_options(spec, options)
  local out = {}
  for k, v in pairs(spec) do out[k] = v end
  out.options = {}
  for _, o in ipairs(spec.options or {}) do out.options[#out.options + 1] = o end
  for _, o in ipairs(options or {}) do out.options[#out.options + 1] = o end
  return out
end

-- The options table before parsing: lists for repeatable options,
-- defaults, false for flags; and the lookup tables by long and short name.
local function start(spec)
  local by_long, by_short = {}, {}
  local o = { args = {} }
  for _, opt in ipairs(spec.options or {}) do
    by_long[opt[1]] = opt
    if opt[2] then by_short[opt[2]] = opt end
    local k = key_of(opt[1])
    if opt.multi then
      o[k] = {}
    elseif opt.default ~= nil then
      o[k] = opt.default
    elseif not opt[3] then
      o[k] = false
    end
  end
  return o, by_long, by_short
end

local function set(spec, o, opt, value, shown)
  local k = key_of(opt[1])
  -- an option declared secret = true: masked in our command line, logs and errors
  if opt.secret and value then pgvault.hide_arg(value) end
  if not opt[3] then
    if value ~= nil then usage_error(spec, "option %s takes no value", shown) end
    o[k] = true
  elseif opt.multi then
    table.insert(o[k], value)
  else
    o[k] = value
  end
end

-- The argument after argv[i], the value of option `opt` (shown as `shown`).
local function next_value(spec, argv, i, opt, shown)
  local value = argv[i + 1]
  if value == nil then usage_error(spec, "option %s needs a value (%s)", shown, opt[3]) end
  return value, i + 1
end

-- "--name", "--name=value"; returns the index of the last argument used.
local function long_option(spec, o, by_long, argv, i)
  local a = argv[i]
  local name, value = a:match("^%-%-([^=]+)=(.*)$")
  name = name or a:sub(3)
  local opt = by_long[name]
  if not opt then usage_error(spec, "unknown option --%s", name) end
  if opt[3] and value == nil then value, i = next_value(spec, argv, i, opt, "--" .. name) end
  set(spec, o, opt, value, "--" .. name)
  return i
end

-- "-x VALUE", "-xVALUE", or clustered flags "-yq".
local function short_options(spec, o, by_short, argv, i)
  local a = argv[i]
  local letter = a:sub(2, 2)
  local opt = by_short[letter]
  if not opt then usage_error(spec, "unknown option -%s", letter) end
  if opt[3] then
    local value = a:sub(3)
    if value == "" then value, i = next_value(spec, argv, i, opt, "-" .. letter) end
    set(spec, o, opt, value, "-" .. letter)
    return i
  end
  for j = 2, #a do
    local f = by_short[a:sub(j, j)]
    if not f or f[3] then usage_error(spec, "unknown option -%s", a:sub(j, j)) end
    set(spec, o, f, nil, "-" .. a:sub(j, j))
  end
  return i
end

-- The positionals by name (spec.positionals), checking their count.
local function positionals(spec, o)
  local list = spec.positionals or {}
  local k = 1
  for idx, p in ipairs(list) do
    if p.rest then
      local rest = {}
      for j = k, #o.args do rest[#rest + 1] = o.args[j] end
      if #rest == 0 and not p.optional then usage_error(spec, "missing %s", p[1]) end
      o[p[1]] = rest
      k = #o.args + 1
    else
      local v = o.args[k]
      if v == nil and not p.optional then usage_error(spec, "missing %s", p[1]) end
      o[p[1]] = v
      k = k + 1
    end
    if idx == #list and k <= #o.args and not spec.extra_args then
      usage_error(spec, "unexpected argument '%s'", o.args[k])
    end
  end
  if #list == 0 and #o.args > 0 and not spec.extra_args then
    usage_error(spec, "unexpected argument '%s'", o.args[1])
  end
end

-- Parses `argv` (an arg table: argv[1..n]) against `spec`.
function cli.parse(argv, spec)
  local o, by_long, by_short = start(spec)
  local i, n = 1, #argv
  local only_positionals = false
  while i <= n do
    local a = argv[i]
    if only_positionals or a == "-" or a:sub(1, 1) ~= "-" then
      o.args[#o.args + 1] = a
    elseif a == "--" then
      only_positionals = true
    elseif a == "-h" or a == "--help" then
      io.stdout:write(cli.help(spec))
      io.stdout:flush()
      os.exit(0, true)
    elseif a:sub(1, 2) == "--" then
      i = long_option(spec, o, by_long, argv, i)
    else
      i = short_options(spec, o, by_short, argv, i)
    end
    i = i + 1
  end
  positionals(spec, o)
  return o
end

-- Human-readable sizes and durations for workflow output.
function cli.bytes(n)
  local units = { "B", "KiB", "MiB", "GiB", "TiB" }
  local u = 1
  while n >= 1024 and u < #units do
    n = n / 1024
    u = u + 1
  end
  return u == 1 and string.format("%d B", n) or string.format("%.1f %s", n, units[u])
end

function cli.duration(s)
  if s < 60 then return string.format("%.1fs", s) end
  return string.format("%dm%02ds", math.floor(s / 60), math.floor(s % 60))
end

return cli
