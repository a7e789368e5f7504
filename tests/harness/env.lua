-- What a test file sees of the harness: the binary under test, temporary
-- directories, running commands, and the PostgreSQL and S3 services that
-- tests/run.lua started (described by the JSON file in PGVAULT_TEST_ENV).
local cjson = require "cjson"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"

local h = {}
h.root = fs.getcwd()
h.bin = os.getenv("PGVAULT_BIN") or "bin/pgvault"
if h.bin:sub(1, 1) ~= "/" then h.bin = h.root .. "/" .. h.bin end

local tmpdirs = {}
local config

local function load_config()
  if config then return config end
  local path = os.getenv("PGVAULT_TEST_ENV")
  if not path then error("no test services: run test files through tests/run.lua", 2) end
  config = cjson.decode(fs.read_file(path))
  return config
end

-- A fresh directory, removed when the file's tests are done. The runner
-- points TMPDIR at its own directory, so nothing outlives the run.
function h.tmpdir()
  local dir = fs.tmpdir("t")
  tmpdirs[#tmpdirs + 1] = dir
  return dir
end

local mounts = {}

-- A small tmpfs (size like "1m"), read-only when opts.ro: a full or
-- read-only target directory for failure tests. Needs root (as CI is).
function h.mount_tmpfs(size, opts)
  local dir = h.tmpdir()
  local o = "size=" .. size .. ((opts and opts.ro) and ",ro" or "")
  local r = proc.run({ "mount", "-t", "tmpfs", "-o", o, "pgvault-test", dir })
  if r.code ~= 0 then error("cannot mount a test tmpfs (root needed): " .. r.stderr, 2) end
  mounts[#mounts + 1] = dir
  return dir
end

function h.cleanup()
  for i = #mounts, 1, -1 do proc.run({ "umount", "-l", mounts[i] }) end
  mounts = {}
  for _, d in ipairs(tmpdirs) do pcall(fs.remove_tree, d) end
  tmpdirs = {}
end

function h.write(path, data) fs.write_file(path, data) end
function h.read(path) return fs.read_file(path) end

-- Runs argv; opts: stdin, env, cwd, timeout (default 300 s), merge_stderr.
function h.run(argv, opts)
  opts = opts or {}
  local spec = {}
  for i, a in ipairs(argv) do spec[i] = a end
  spec.stdin, spec.env, spec.cwd, spec.merge_stderr = opts.stdin, opts.env, opts.cwd, opts.merge_stderr
  spec.timeout = opts.timeout or 300
  return proc.run(spec)
end

local valgrind = os.getenv("PGVAULT_VALGRIND")
-- True when every pgvault process runs under valgrind (make valgrind).
h.valgrind = valgrind ~= nil
-- True when the binary under test is AddressSanitizer's build (make asan).
h.asan = (os.getenv("ASAN_OPTIONS") or "") ~= ""

-- Runs the binary under test (under valgrind when PGVAULT_VALGRIND is set).
function h.pgvault(args, opts)
  local argv = {}
  if valgrind and not (opts and opts.no_valgrind) then
    argv = { "valgrind", "-q", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite",
      "--suppressions=" .. h.root .. "/tests/valgrind.supp" }
  end
  argv[#argv + 1] = h.bin
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  opts = opts or {}
  if valgrind and opts.timeout then opts.timeout = opts.timeout * 10 end
  return h.run(argv, opts)
end

-- PostgreSQL -------------------------------------------------------------

-- A cluster's settings (user, password, port, socket_dir ...) with url(db)
-- and admin_url(db): the suite's (h.pg), or one a test started itself.
function h.cluster(c)
  local pg = {}
  for k, v in pairs(c) do pg[k] = v end
  function pg.url(db)
    return string.format("postgresql://%s:%s@127.0.0.1:%d/%s", c.user, c.password, c.port, db or "postgres")
  end
  function pg.admin_url(db)
    return string.format("postgresql:///%s?host=%s&port=%d&user=postgres", db or "postgres", c.socket_dir, c.port)
  end
  return pg
end

function h.pg() return h.cluster(load_config().pg) end

-- URL without its password, and the password (for PGPASSWORD).
local function split_password(url)
  local pw = url:match("^%w+://[^:/@]*:([^@]*)@")
  if not pw then return url, nil end
  return (url:gsub("^(%w+://[^:/@]*):[^@]*@", "%1@")), pw
end

function h.psql(url, sql, opts)
  local clean, pw = split_password(url)
  local pg = h.pg()
  local r = h.run({ pg.bindir .. "/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", clean, "-f", "-" },
    { stdin = sql, env = { PGPASSWORD = pw or false, PGOPTIONS = opts and opts.pgoptions or false } })
  if r.code ~= 0 then
    error(string.format("psql failed (%d): %s", r.code, r.stderr), 2)
  end
  return r.stdout, r.stderr
end

function h.createdb(name)
  assert(name:match("^[%w_]+$"), "database names in tests are plain identifiers")
  local pg = h.pg()
  h.psql(pg.admin_url("postgres"), string.format(
    "DROP DATABASE IF EXISTS %s WITH (FORCE);\n" ..
    "CREATE DATABASE %s OWNER %s TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'en_US.UTF-8' LC_CTYPE 'en_US.UTF-8';\n",
    name, name, pg.user))
  return pg.url(name)
end

function h.dropdb(name)
  h.psql(h.pg().admin_url("postgres"), string.format("DROP DATABASE IF EXISTS %s WITH (FORCE);", name))
end

-- S3 ------------------------------------------------------------------------

function h.s3()
  local c = load_config().s3
  local s3 = {}
  for k, v in pairs(c) do s3[k] = v end
  s3.env = {
    AWS_ACCESS_KEY_ID = c.access_key,
    AWS_SECRET_ACCESS_KEY = c.secret_key,
    AWS_REGION = c.region,
    AWS_DEFAULT_REGION = c.region,
    AWS_ENDPOINT_URL = c.endpoint,
    AWS_PROFILE = false,
    AWS_CONFIG_FILE = "/nonexistent/pgvault-test-aws-config",
    AWS_SHARED_CREDENTIALS_FILE = "/nonexistent/pgvault-test-aws-credentials",
    AWS_EC2_METADATA_DISABLED = "true",
  }
  return s3
end

-- Runs Debian's aws CLI v2 (never the pyenv shim on PATH) against the test
-- server. Extra env entries in opts.env override the test credentials.
function h.aws(args, opts)
  opts = opts or {}
  local s3 = h.s3()
  local env = {}
  for k, v in pairs(s3.env) do env[k] = v end
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local argv = { "/usr/bin/aws", "--endpoint-url", s3.endpoint, "--region", s3.region }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return h.run(argv, { stdin = opts.stdin, env = env, timeout = opts.timeout, cwd = opts.cwd })
end

function h.make_bucket(name)
  local r = h.aws({ "s3api", "create-bucket", "--bucket", name })
  if r.code ~= 0 and not r.stderr:find("BucketAlreadyOwnedByYou") and not r.stderr:find("BucketAlreadyExists") then
    error("cannot create bucket " .. name .. ": " .. r.stderr, 2)
  end
  return name
end

return h
