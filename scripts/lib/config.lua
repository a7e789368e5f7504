-- The configuration file, pgvault.conf.lua, and the one place where a
-- workflow's flags and the file's settings meet:
--
--   defaults { keep_daily = 7 }                       -- shared by every environment
--   environment "prod" {
--     db = env "PROD_DATABASE_URL",                   -- secrets by reference, never in the file
--     to = "s3://backups/prod/", region = "us-west-004",
--     ping = file "/run/secrets/hc_ping_url",      -- or credential "NAME" (systemd LoadCredential=)
--   }
--
-- Found as --config FILE, $PGVAULT_CONFIG, ./pgvault.conf.lua or
-- ~/.config/pgvault/config.lua; loaded in a sandbox (no io, os, require,
-- load: a configuration describes, it does not act). Every key is declared
-- in config.KEYS with its type and help; its flag is the key with dashes.
-- Unknown keys and wrong types are errors naming the file and line.
--
-- In a workflow:
--   local spec = { usage = ..., options = config.with_options({ config.option("db"), ... }) }
--   local o = config.apply(cli.parse(arg, spec), spec)   -- flags over the file over defaults
local fs = require "pgvault.fs"
local pgvault = require "pgvault"
local retention = require "lib.retention"

local config = {}

-- Every setting. type: string | integer | count (a number or "unlimited") |
-- boolean | list (strings) | duration (restic's 1y2m3d4h) | enum (values).
-- secret: registered with the log's redaction; `config check` masks the
-- password of a URL ("password"), the path of a URL that is its own
-- credential ("path") or the whole value ("all").
-- arg: the flag's value name; short: its one-letter form; negate: the flag
-- is --no-KEY (a boolean that defaults to true).
config.KEYS = {
  { "db", "string", "the database (postgresql://user@host:port/db or a conninfo string)", arg = "URL",
    short = "d", secret = "password" },
  { "to", "string", "where backups go: a directory or s3://BUCKET/PREFIX/ (default db_backups)", arg = "DEST",
    short = "o" },
  { "suffix", "string", "environment name in backup names (default: the environment's name, else local)",
    arg = "NAME", short = "s" },
  { "all_databases", "boolean", "every connectable database of the server (one backup each, the database in "
    .. "its name) and the roles and grants" },
  { "compress", "enum", "zstd (default), pg or none", arg = "METHOD", values = { "zstd", "pg", "none" } },
  { "level", "integer", "compression level (zstd 1-19, default 3; pg 1-9, default 6)", arg = "N", min = 1 },
  { "pg_bin", "string", "directory of the PostgreSQL client programs to use", arg = "DIR" },
  -- S3 (the aws CLI's names)
  { "endpoint_url", "string", "S3 endpoint, e.g. https://s3.us-west-004.backblazeb2.com", arg = "URL" },
  { "region", "string", "S3 region for signing", arg = "NAME" },
  { "profile", "string", "profile from ~/.aws/credentials and ~/.aws/config", arg = "NAME" },
  { "ca_bundle", "string", "also trust the CA certificates in FILE (S3 and HTTPS)", arg = "FILE" },
  { "part_size", "integer", "multipart part size in MiB (default 8, at least 5)", arg = "MiB", min = 5, max = 5120 },
  { "parallel", "integer", "S3 parts in flight at once (default 4)", arg = "N", min = 1, max = 64 },
  { "retries", "integer", "attempts per S3 request before giving up (default 6)", arg = "N", min = 1, max = 100 },
  { "timeout", "integer", "seconds an S3 request may stall before it is retried (default 60)", arg = "SECONDS",
    min = 1, max = 3600 },
  -- encryption and signatures
  { "recipient", "list", "encrypt to this age recipient", arg = "RECIPIENT", short = "r" },
  { "recipients_file", "list", "encrypt to every age recipient listed in FILE", arg = "FILE", short = "R" },
  { "identity", "list", "age identity file to decrypt with (read-back check, restore drill)", arg = "FILE",
    short = "i" },
  { "sign", "string", "sign each manifest with this minisign secret key file", arg = "KEY" },
  { "sign_password_file", "string", "file holding the signing key's password (when it has one)", arg = "FILE" },
  { "trust", "list", "trusted minisign public key file", arg = "FILE" },
  -- retention (restic's rules)
  { "keep_last", "count", "keep the newest N backups", arg = "N" },
  { "keep_hourly", "count", "keep the newest backup of each of the last N hours", arg = "N" },
  { "keep_daily", "count", "keep the newest backup of each of the last N days", arg = "N" },
  { "keep_weekly", "count", "keep the newest backup of each of the last N ISO weeks", arg = "N" },
  { "keep_monthly", "count", "keep the newest backup of each of the last N months", arg = "N" },
  { "keep_yearly", "count", "keep the newest backup of each of the last N years", arg = "N" },
  { "keep_within", "duration", "keep every backup within DURATION (1y2m3d4h) of the newest", arg = "DURATION" },
  { "keep_within_hourly", "duration", "keep hourly backups within DURATION of the newest", arg = "DURATION" },
  { "keep_within_daily", "duration", "keep daily backups within DURATION of the newest", arg = "DURATION" },
  { "keep_within_weekly", "duration", "keep weekly backups within DURATION of the newest", arg = "DURATION" },
  { "keep_within_monthly", "duration", "keep monthly backups within DURATION of the newest", arg = "DURATION" },
  { "keep_within_yearly", "duration", "keep yearly backups within DURATION of the newest", arg = "DURATION" },
  { "grace", "duration", "leave archives without a manifest alone until this old (default 24h)",
    arg = "DURATION" },
  -- nightly
  { "readback", "boolean", "skip reading the off-site copy back (on B2 a download above the free daily "
    .. "allowance costs money)", negate = true, default = true },
  { "ping", "string", "healthchecks.io-style URL: URL/start, URL on success, URL/fail with the log tail",
    arg = "URL", secret = "path" },
  { "webhook", "string", "POST the JSON summary of each run to URL", arg = "URL", secret = "path" },
  { "webhook_secret", "string", "sign webhook bodies: X-Pgvault-Signature-256: sha256=HMAC(secret, body)",
    arg = "SECRET", secret = "all" },
  { "drill_every", "enum", "restore drill of the new backup: week (default: first run of the week), day or "
    .. "never", arg = "WHEN", values = { "week", "day", "never" }, default = "week" },
  { "drill_db", "string", "scratch database URL for the restore drill (created and dropped; default: "
    .. "pgvault_drill_<db> on the backed-up server)", arg = "URL", secret = "password" },
  { "lock_ttl", "duration", "a bucket lock older than this is taken as abandoned (default 6h)", arg = "DURATION" },
  -- neon-restore (the API keys are read from the file or the environment, never from a flag)
  { "neon_project", "string", "Neon project id (the Console's project Settings)", arg = "ID" },
  { "neon_branch", "string", "Neon branch name or id (default: the project's default branch)", arg = "NAME|ID" },
  { "neon_database", "string", "the Neon database neon-restore replaces", arg = "NAME" },
  { "neon_role", "string", "role in the app's database URL (default: the database's owner)", arg = "NAME" },
  { "neon_api_key", "string", "Neon API key (default: $NEON_API_KEY)", arg = "KEY", secret = "all" },
  { "neon_api_host", "string", "Neon API base URL (default: $NEON_API_HOST, else https://console.neon.tech/api/v2)",
    arg = "URL" },
  { "fly_app", "string", "Fly.io app whose DATABASE_URL secret neon-restore sets and deploys", arg = "APP" },
  { "fly_api_token", "string", "Fly.io token (default: $FLY_ACCESS_TOKEN, then $FLY_API_TOKEN)", arg = "TOKEN",
    secret = "all" },
  { "flaps_base_url", "string", "Fly Machines API base URL (default: $FLY_FLAPS_BASE_URL or $FLAPS_BASE_URL, else "
    .. "https://api.machines.dev)", arg = "URL" },
  { "env_file", "string", "dotenv file whose DATABASE_URL neon-restore rewrites (e.g. .env.production)",
    arg = "FILE" },
}

config.BY_NAME = {}
for _, k in ipairs(config.KEYS) do
  k.name, k.type, k.help = k[1], k[2], k[3]
  config.BY_NAME[k.name] = k
end

local function fail(fmt, ...)
  pgvault.raise("config", string.format(fmt, ...))
end

local function usage(fmt, ...)
  pgvault.raise("usage", string.format(fmt, ...))
end

-- ------------------------------------------------------------------------
-- Values
-- ------------------------------------------------------------------------

local REF = {}
REF.__index = REF
REF.__tostring = function(r) return string.format("%s %q", r.kind, r.name) end

local function is_ref(v) return getmetatable(v) == REF end

-- What a value of type `t` must look like, for messages.
local EXPECTED = {
  string = "a string", integer = "an integer", count = "an integer or \"unlimited\"",
  boolean = "true or false", list = "a string or a list of strings", duration = "a duration like 7d, 12h or 1y6m",
}

-- Checks one value against key k; returns the normalised value or nil and
-- the complaint. References (env/file) stand for strings.
function config.check_value(k, v)
  local t = k.type
  local function bad()
    local want = EXPECTED[t]
    if t == "enum" then
      want = table.concat(k.values, ", ", 1, #k.values - 1) .. " or " .. k.values[#k.values]
    end
    if (t == "integer" or t == "count") and k.max then
      want = string.format("%s from %d to %d", want, k.min or 0, k.max)
    elseif (t == "integer" or t == "count") and k.min then
      want = want .. " (at least " .. k.min .. ")"
    end
    local shown = type(v) == "string" and string.format("%q", v) or (is_ref(v) and tostring(v) or tostring(v))
    return nil, string.format("%s must be %s, not %s", k.name, want, shown)
  end
  if is_ref(v) then
    if t == "string" or t == "list" then return t == "list" and { v } or v end
    return bad()
  end
  if t == "string" then
    if type(v) ~= "string" or v == "" then return bad() end
    return v
  elseif t == "integer" or t == "count" then
    if t == "count" and (v == "unlimited" or v == -1) then return -1 end
    local n = math.type(v) == "integer" and v or (math.type(v) == "float" and math.tointeger(v))
    if not n or n < (k.min or 0) or (k.max and n > k.max) then return bad() end
    return n
  elseif t == "boolean" then
    if type(v) ~= "boolean" then return bad() end
    return v
  elseif t == "list" then
    if type(v) == "string" and v ~= "" then return { v } end
    if type(v) ~= "table" or getmetatable(v) then return bad() end
    local out = {}
    for i = 1, #v do
      if not (type(v[i]) == "string" or is_ref(v[i])) then return bad() end
      out[i] = v[i]
    end
    for key in pairs(v) do
      if math.type(key) ~= "integer" or key < 1 or key > #v then return bad() end
    end
    return out
  elseif t == "duration" then
    if type(v) ~= "string" or not retention.parse_duration(v) then return bad() end
    return v
  elseif t == "enum" then
    for _, allowed in ipairs(k.values) do if v == allowed then return v end end
    return bad()
  end
  error("lib.config: key " .. k.name .. " has an unknown type " .. tostring(t))
end

-- Closest declared key to a misspelt one (edit distance at most 3).
local function suggest(name)
  local function distance(a, b)
    local prev = {}
    for j = 0, #b do prev[j] = j end
    for i = 1, #a do
      local cur = { [0] = i }
      for j = 1, #b do
        local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
        cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
      end
      prev = cur
    end
    return prev[#b]
  end
  local best, best_d = nil, 4
  for _, k in ipairs(config.KEYS) do
    local d = distance(name, k.name)
    if d < best_d then best, best_d = k.name, d end
  end
  return best
end

-- ------------------------------------------------------------------------
-- Loading, in a sandbox
-- ------------------------------------------------------------------------

local MAX_INSTRUCTIONS = 10 * 1000 * 1000

local function not_available(what)
  return function(_, k)
    error(string.format("'%s%s' is not available in a configuration file (it describes, it does not act)",
      what, tostring(k)), 2)
  end
end

-- What a configuration may use besides its own vocabulary: pure functions.
local function safe_globals()
  local function pick(lib, names, prefix)
    local t = {}
    for _, f in ipairs(names) do t[f] = lib[f] end
    return setmetatable(t, { __index = not_available(prefix) })
  end
  local m = {}
  for k in pairs(math) do if k ~= "random" and k ~= "randomseed" then m[#m + 1] = k end end
  return {
    string = pick(string, { "byte", "char", "find", "format", "gmatch", "gsub", "len", "lower", "match",
      "reverse", "sub", "upper" }, "string."),
    table = pick(table, { "concat", "insert", "unpack", "sort" }, "table."),
    math = pick(math, m, "math."),
    pairs = pairs, ipairs = ipairs, tostring = tostring, tonumber = tonumber, type = type, select = select,
    next = next, error = error, assert = assert,
  }
end

-- Line of the first "key =" at or after line `from` (the environment's
-- line): table constructors do not keep lines, the source does.
local function key_line(lines, from, key)
  local pat = "%f[%w_]" .. key:gsub("%p", "%%%0") .. "%s*=%f[^=]"
  for i = from, #lines do
    local code = lines[i]:gsub("%-%-.*$", "")
    if code:find(pat) then return i end
  end
  return from
end

local function split_lines(text)
  local lines = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  return lines
end

-- Checks one environment's (or the defaults') table; appends problems.
local function check_block(block, lines, shown, problems, what)
  local values = {}
  for key, v in pairs(block.raw) do
    local line = type(key) == "string" and key_line(lines, block.line, key) or block.line
    local where = string.format("%s:%d: ", shown, line)
    local k = type(key) == "string" and config.BY_NAME[key]
    if not k then
      local hint = type(key) == "string" and suggest(key)
      problems[#problems + 1] = where .. string.format("unknown key %s in %s%s", type(key) == "string" and
        ("'" .. key .. "'") or tostring(key), what, hint and (" (did you mean " .. hint .. "?)") or "")
    else
      local value, complaint = config.check_value(k, v)
      if value == nil then
        problems[#problems + 1] = where .. complaint
      else
        values[key] = { value = value, line = line }
      end
    end
  end
  block.values = values
end

-- The words a configuration file is written with: environment, defaults,
-- env, file, credential; they record into `state`.
local function vocabulary(state)
  local function here(level) return debug.getinfo(level + 1, "l").currentline or 0 end
  local function ref(kind, name, valid, hint)
    if type(name) ~= "string" or not valid(name) then error(hint, 3) end
    return setmetatable({ kind = kind, name = name, line = here(3) }, REF)
  end
  local api = {}
  -- (No tail calls below: `here` and `error` count the frames up to the file's.)
  function api.env(name)
    local r = ref("env", name, function(n) return n:match("^[%a_][%w_]*$") end,
      "env needs the name of an environment variable, as env \"NAME\"")
    return r
  end
  function api.file(path)
    local r = ref("file", path, function(n) return n ~= "" end, "file needs a path, as file \"/run/secrets/NAME\"")
    return r
  end
  function api.credential(name)
    local r = ref("credential", name, function(n) return n:match("^[%w_.%-]+$") and not n:match("^%.+$") end,
      "credential needs the name of a systemd credential, as credential \"db_url\"")
    return r
  end
  function api.environment(name)
    local line = here(2)
    if not (type(name) == "string" and name:match("^[%w_%-]+$") and #name <= 64) then
      error("an environment needs a name of letters, digits, - and _, as environment \"prod\" { ... }", 2)
    end
    if state.environments[name] then
      error(string.format("environment %s is defined twice (first on line %d)", name,
        state.environments[name].line), 2)
    end
    return function(t)
      if type(t) ~= "table" then error("environment \"" .. name .. "\" needs a table: { key = value, ... }", 2) end
      state.environments[name] = { name = name, line = line, raw = t }
      state.order[#state.order + 1] = name
    end
  end
  function api.defaults(t)
    if type(t) ~= "table" then error("defaults needs a table: defaults { key = value, ... }", 2) end
    if state.defaults then error("defaults are given twice (first on line " .. state.defaults.line .. ")", 2) end
    state.defaults = { line = here(2), raw = t }
  end
  return api
end

-- Runs the chunk in a coroutine whose hook stops it after MAX_INSTRUCTIONS.
local function run_limited(chunk, shown)
  local co = coroutine.create(chunk)
  local steps = 0
  debug.sethook(co, function()
    steps = steps + 1
    if steps * 100000 > MAX_INSTRUCTIONS then error("the configuration runs too long: it must only describe", 2) end
  end, "", 100000)
  local ok, cerr = coroutine.resume(co)
  if not ok then fail("%s", tostring(cerr)) end
  if coroutine.status(co) ~= "dead" then fail("%s: the configuration must not yield", shown) end
end

local function raise_problems(problems)
  table.sort(problems, function(a, b)
    local la, lb = tonumber(a:match(":(%d+):")) or 0, tonumber(b:match(":(%d+):")) or 0
    if la ~= lb then return la < lb end
    return a < b
  end)
  error(pgvault.error("config", problems[1] .. (#problems > 1 and string.format(
    " (and %d more problem%s: run 'pgvault config check')", #problems - 1, #problems > 2 and "s" or "") or ""),
    { problems = problems }), 0)
end

-- Loads configuration text; `shown` names it in messages. Returns
-- { path =, environments = { NAME = { name=, line=, values = { KEY = {value=, line=} } } },
--   order = { NAME, ... }, defaults = {...} }, or raises kind "config"
-- naming file and line (the first problem, and how many more there are).
function config.load_text(text, shown)
  local state = { environments = {}, order = {}, defaults = nil }
  local api, safe, missing = vocabulary(state), safe_globals(), not_available("")
  local sandbox = setmetatable({}, { __index = function(t, k)
    if api[k] then return api[k] end
    if safe[k] ~= nil then return safe[k] end
    return missing(t, k)
  end })
  local chunk, err = load(text, "=" .. shown, "t", sandbox)
  if not chunk then fail("%s", err) end
  run_limited(chunk, shown)
  local lines, problems = split_lines(text), {}
  if state.defaults then check_block(state.defaults, lines, shown, problems, "defaults") end
  for _, name in ipairs(state.order) do
    check_block(state.environments[name], lines, shown, problems, "environment " .. name)
  end
  if #state.order == 0 then
    problems[#problems + 1] = shown .. ": no environment defined (environment \"prod\" { db = ..., to = ... })"
  end
  if #problems > 0 then raise_problems(problems) end
  state.path = shown
  return state
end

-- Loads a configuration file (it must be a regular file nobody else may write).
function config.load(path)
  local st = fs.stat(path)
  if not st then fail("configuration file %s does not exist", path) end
  if st.type ~= "file" then fail("configuration file %s is not a regular file", path) end
  if st.mode and (st.mode & 2) ~= 0 then
    fail("configuration file %s is writable by everyone: anyone could redirect your backups (chmod o-w %s)",
      path, path)
  end
  return config.load_text(fs.read_file(path), path)
end

-- Where the configuration file is: --config FILE, $PGVAULT_CONFIG,
-- ./pgvault.conf.lua, ~/.config/pgvault/config.lua. Returns the path (nil
-- when none) and the places looked at.
function config.find(o)
  if o and o.config then return o.config, { o.config } end
  local from_env = os.getenv("PGVAULT_CONFIG")
  if from_env and from_env ~= "" then return from_env, { from_env } end
  local tried = { "./pgvault.conf.lua" }
  if fs.exists("pgvault.conf.lua") then return "pgvault.conf.lua", tried end
  local base = os.getenv("XDG_CONFIG_HOME")
  if not base or base == "" then
    local home = os.getenv("HOME")
    base = home and home ~= "" and (home .. "/.config") or nil
  end
  if base then
    local user = base .. "/pgvault/config.lua"
    tried[#tried + 1] = user
    if fs.exists(user) then return user, tried end
  end
  return nil, tried
end

-- The settings of one environment (the defaults under it): KEY -> {value=, line=, from=}.
function config.environment(loaded, name)
  if not name then
    if #loaded.order ~= 1 then
      usage("%s defines environments %s: choose one with --env NAME", loaded.path, table.concat(loaded.order, ", "))
    end
    name = loaded.order[1]
  end
  local env = loaded.environments[name]
  if not env then
    fail("environment '%s' is not defined in %s (it has: %s)", name, loaded.path, table.concat(loaded.order, ", "))
  end
  local values = {}
  for k, v in pairs(loaded.defaults and loaded.defaults.values or {}) do
    values[k] = { value = v.value, line = v.line, from = "defaults" }
  end
  for k, v in pairs(env.values) do values[k] = { value = v.value, line = v.line } end
  return { name = name, line = env.line, values = values, path = loaded.path }
end

-- ------------------------------------------------------------------------
-- Resolving references, and flags over the file
-- ------------------------------------------------------------------------

-- The value behind one reference: an environment variable or a file's
-- content (one trailing newline dropped).
local function deref(r, key, where)
  if r.kind == "env" then
    local v = os.getenv(r.name)
    if not v or v == "" then
      fail("%s: %s comes from the environment variable %s, which is not set: set it or change the file", where,
        key, r.name)
    end
    return v
  end
  local path, what = r.name, "the file " .. r.name
  if r.kind == "credential" then
    local dir = os.getenv("CREDENTIALS_DIRECTORY")
    if not dir or dir == "" then
      fail("%s: %s comes from the systemd credential %s, but $CREDENTIALS_DIRECTORY is not set: run under systemd "
        .. "with LoadCredential=%s:FILE (or set it to a directory holding %s)", where, key, r.name, r.name, r.name)
    end
    path, what = dir .. "/" .. r.name, "the systemd credential " .. r.name
  end
  local ok, text = pcall(fs.read_file, path)
  if not ok then
    fail("%s: %s comes from %s, which cannot be read (%s)", where, key, what,
      tostring(type(text) == "table" and text.message or text))
  end
  text = text:gsub("\r?\n$", "")
  if text == "" then fail("%s: %s comes from %s, which is empty", where, key, what) end
  return text
end

-- An entry's value with references resolved, and where it came from
-- ("pgvault.conf.lua:12", "env PROD_DB (pgvault.conf.lua:4)").
function config.resolve(entry, key, path)
  local where = string.format("%s:%d", path, entry.line)
  local v, refs = entry.value, {}
  if is_ref(v) then
    refs[1] = v.kind .. " " .. v.name
    v = deref(v, key, where)
  elseif type(v) == "table" then
    local out = {}
    for i, item in ipairs(v) do
      if is_ref(item) then
        refs[#refs + 1] = item.kind .. " " .. item.name
        out[i] = deref(item, key, where)
      else
        out[i] = item
      end
    end
    v = out
  end
  local source = entry.from == "defaults" and ("defaults, " .. where) or where
  if #refs > 0 then source = table.concat(refs, ", ") .. " (" .. source .. ")" end
  return v, source
end

local function dashed(name) return (name:gsub("_", "-")) end
local function field(opt) return (opt[1]:gsub("-", "_")) end

-- The cli.parse option for a key (overrides: fields to change, e.g. short = false).
function config.option(name, overrides)
  local k = config.BY_NAME[name] or error("lib.config: no key " .. tostring(name), 2)
  local opt
  if k.negate then
    opt = { "no-" .. dashed(name), nil, false, k.help, negate = true }
  elseif k.type == "boolean" then
    opt = { dashed(name), nil, false, k.help }
  else
    opt = { dashed(name), k.short, k.arg or "VALUE", k.help, multi = k.type == "list" }
  end
  opt.key = name
  for key, v in pairs(overrides or {}) do
    if key == "short" then opt[2] = v or nil else opt[key] = v end
  end
  return opt
end

function config.options(names)
  local out = {}
  for i, n in ipairs(names) do out[i] = config.option(n) end
  return out
end

config.ENV_OPTIONS = {
  { "env", "e", "NAME", "take the settings of environment NAME from the configuration file ($PGVAULT_ENV)" },
  { "config", nil, "FILE", "the configuration file (default: $PGVAULT_CONFIG, ./pgvault.conf.lua, "
    .. "~/.config/pgvault/config.lua)" },
}

-- A copy of a workflow's cli.parse spec with --env and --config added.
function config.cli(spec)
  local out = {}
  for k, v in pairs(spec) do out[k] = v end
  out.options = config.with_options(spec.options or {})
  return out
end

-- Appends --env and --config to a cli.parse option list.
function config.with_options(options)
  local out = {}
  for _, o in ipairs(options) do out[#out + 1] = o end
  for _, o in ipairs(config.ENV_OPTIONS) do out[#out + 1] = o end
  return out
end

-- A flag's string turned into the key's type; raises "usage" naming the flag.
-- (lib.s3cli checks the S3 flags of the commands without --env with it.)
function config.from_flag(k, opt, v)
  if k.type == "integer" or k.type == "count" then
    v = v == "unlimited" and v or (math.tointeger(tonumber(v)) or v)
  end
  local value, complaint = config.check_value(k, v)
  if value == nil then usage("--%s %s", opt[1], (complaint:gsub("^[%w_]+ ", "", 1))) end
  return value
end

-- The settings file and environment a run asked for (--env, --config,
-- $PGVAULT_ENV, $PGVAULT_CONFIG), or nil when it asked for none.
function config.selected(o)
  local name = o.env or os.getenv("PGVAULT_ENV")
  if name == "" then name = nil end
  if not name and not o.config then return nil end
  local path, tried = config.find(o)
  if not path then
    fail("--env %s: no configuration file (looked for %s): write one, or give --config FILE", name or "",
      table.concat(tried, ", "))
  end
  return config.environment(config.load(path), name)
end

-- Fills the options of `spec` that are configuration keys, in this order:
-- the flag, the environment's setting, the key's default. Values come out
-- typed (integers, lists, booleans); o.settings = { env =, path =,
-- sources = { KEY = "--keep-daily" | "pgvault.conf.lua:12" | "default" } }.
-- keys: option name -> the key that feeds it (list's --from is fed by
-- "to"), or false for an option the file must not fill (restore's --db).
function config.apply(o, spec, keys)
  local env = config.selected(o)
  local sources = {}
  for _, opt in ipairs(spec.options or {}) do
    local name = opt.key or field(opt)
    if keys and keys[name] ~= nil then name = keys[name] end
    local k = name and config.BY_NAME[name]
    if k then
      local f, value, source = field(opt), nil, nil
      local flag = o[f]
      if opt.negate then
        if flag == true then value, source = false, "--" .. opt[1] end
      elseif k.type == "boolean" then
        if flag == true then value, source = true, "--" .. opt[1] end
      elseif k.type == "list" then
        if type(flag) == "table" and #flag > 0 then value, source = config.from_flag(k, opt, flag), "--" .. opt[1] end
      elseif flag ~= nil and flag ~= false then
        -- An option made by config.option is checked and typed here; a
        -- workflow's own option (backup's --level …) is left as given, for
        -- the workflow's own checks and messages.
        value, source = opt.key and config.from_flag(k, opt, flag) or flag, "--" .. opt[1]
      end
      if value == nil and env and env.values[k.name] then
        value, source = config.resolve(env.values[k.name], k.name, env.path)
      end
      if value == nil and k.name == "suffix" and env then value, source = env.name, "the environment's name" end
      if value == nil and k.default ~= nil then value, source = k.default, "default" end
      if value == nil and k.type == "list" then value = {} end
      if value == nil and k.type == "boolean" then value = false end
      if k.secret and type(value) == "string" then log.secret(value) end
      if not opt.negate then o[f] = value end
      o[k.name] = value
      sources[k.name] = source
    end
  end
  o.settings = { env = env and env.name, path = env and env.path, sources = sources }
  return o
end

-- A value as `config check` shows it: secrets masked.
function config.show(k, v)
  if type(v) == "table" then
    local out = {}
    for i, item in ipairs(v) do out[i] = config.show(k, item) end
    return table.concat(out, ", ")
  end
  if k.secret == "all" then return "***" end
  if type(v) ~= "string" then return tostring(v) end
  if k.secret == "path" then return require("pgvault.http").mask_url(v, { secret_path = true }) end
  if k.secret == "password" then
    -- Only the password: the rest says which database it is. (pgvault.redact
    -- would mask the whole value, registered as a secret.)
    v = v:gsub("^([%w+.-]+://[^:/@]*:)[^@]*@", "%1***@")
    v = v:gsub("([?&]password=)[^&]*", "%1***")
    v = v:gsub("(password%s*=%s*)'[^']*'", "%1***"):gsub("(password%s*=%s*)[^%s']+", "%1***")
  end
  return v
end

return config
