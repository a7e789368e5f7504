-- check the configuration file: each environment's settings, resolved, and where each comes from
local cli = require "lib.cli"
local config = require "lib.config"
local pgvault = require "pgvault"

local options = { { "json", nil, false, "print the settings as JSON (secrets masked)" } }
for _, k in ipairs(config.KEYS) do options[#options + 1] = config.option(k.name) end
local spec = {
  usage = "pgvault config check [--env NAME] [--config FILE] [--KEY VALUE]...",
  summary = "Loads the configuration file (--config FILE, $PGVAULT_CONFIG, ./pgvault.conf.lua or\n"
    .. "~/.config/pgvault/config.lua) and prints, for each environment (or the one --env names), every\n"
    .. "setting with its secrets masked and where it came from: a flag, the file and line, an\n"
    .. "environment variable or file it references, or the default. Flags given here override the\n"
    .. "file as they would in a workflow. Any unknown key, wrong type or unresolvable reference is\n"
    .. "reported with its file and line, and the exit code is 1.",
  options = config.with_options(options),
  positionals = { { "ACTION", "check (the only action)" } },
}
local o = cli.parse(arg, spec)
if o.ACTION ~= "check" then
  pgvault.raise("usage", "unknown action '" .. o.ACTION .. "' (see 'pgvault config --help')")
end

local path, tried = config.find(o)
if not path then
  pgvault.raise("config", "no configuration file: looked for " .. table.concat(tried, ", ")
    .. " (write one, or give --config FILE)")
end
local ok, loaded = pcall(config.load, path)
if not ok then
  local problems = type(loaded) == "table" and loaded.problems
  if problems then
    for _, p in ipairs(problems) do io.stderr:write("pgvault: config: ", p, "\n") end
    pgvault.raise("config", string.format("%s has %d problem%s", path, #problems, #problems > 1 and "s" or ""))
  end
  error(loaded, 0)
end

-- Resolves one environment as a workflow taking every key would.
local function settings(name)
  local copy = {}
  for k, v in pairs(o) do copy[k] = v end
  copy.env, copy.config = name, path
  local rok, r = pcall(config.apply, copy, spec)
  if not rok then return nil, r end
  return r
end

local names = o.env and { o.env } or loaded.order
local failed, report = 0, {}
for _, name in ipairs(names) do
  local r, err = settings(name)
  local entry = { environment = name, settings = {} }
  report[#report + 1] = entry
  if not r then
    failed = failed + 1
    entry.error = tostring(err)
  else
    for _, k in ipairs(config.KEYS) do
      local v = r[k.name]
      local src = r.settings.sources[k.name]
      if src and v ~= nil and not (type(v) == "table" and #v == 0) then
        entry.settings[#entry.settings + 1] = { key = k.name, value = config.show(k, v), source = src }
      end
    end
  end
end

if o.json then
  print(require("lib.json").encode({ file = path, environments = report }))
else
  print("configuration file: " .. path)
  for _, entry in ipairs(report) do
    print("")
    print("environment " .. entry.environment)
    if entry.error then
      print("  error: " .. entry.error)
    else
      local w1, w2 = 0, 0
      for _, s in ipairs(entry.settings) do
        w1, w2 = math.max(w1, #s.key), math.max(w2, #s.value)
      end
      for _, s in ipairs(entry.settings) do
        print(string.format("  %-" .. w1 .. "s  %-" .. w2 .. "s  %s", s.key, s.value, s.source))
      end
    end
  end
end
if failed > 0 then
  pgvault.raise("config", string.format("%d environment%s of %s cannot be resolved (see above)", failed,
    failed > 1 and "s" or "", path))
end
