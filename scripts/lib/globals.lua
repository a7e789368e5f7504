-- Every database of a server, and what belongs to none of them: the roles
-- and grants (`backup --all-databases`, `nightly --all-databases`,
-- `restore --globals FILE`).
--
--   globals.databases(url) -> { name, ... }     connectable, non-template, sorted
--   globals.suffix(env, db) -> "prod--app"      the database in the backup's name
--   globals.url(url, db) -> url for database db on the same server
--   globals.dump{ db =, to =, env =, stamp =, recipients = {age recipients} | nil, s3 = }
--       -> { path =, manifest_path =, bytes = }  pg_dumpall --globals-only into
--       DEST/STAMP_ENV_globals.sql.zst[.age] and its manifest (written after it)
--   globals.apply{ src =, db =, identity_files =, s3 = }  replays such a file with psql
--
-- A role that may not read passwords (pg_authid; Neon's roles) gets
-- --no-role-passwords. Replaying creates roles that are missing and leaves
-- existing ones (CREATE ROLE wrapped to skip duplicate_object), so a restore
-- onto a server that has some of them does not stop at the first.
local pg = require "pgvault.pg"
local pgvault = require "pgvault"
local stream = require "pgvault.stream"
local manifest = require "lib.manifest"
local naming = require "lib.naming"

local globals = {}

globals.SUFFIX = "_globals.sql"

-- {name=, stamp=, seq=, time=, env=, ext=, globals=true} for the file name of
-- a roles-and-grants dump (STAMP_ENV_globals.sql.zst[.age]), else nil.
function globals.parse(path)
  local name = path:match("([^/]+)$")
  local stamp, seq, env, ext = (name or ""):match("^(" .. string.rep("%d", 14) .. ")(%-?%d*)_([%w_%-]+)"
    .. "_globals%.sql(.*)$")
  if not stamp or not naming.valid_env(env) then return nil end
  if ext ~= "" and ext ~= ".zst" and ext ~= ".age" and ext ~= ".zst.age" then return nil end
  return { name = name, stamp = stamp, seq = seq == "" and 1 or math.tointeger(-tonumber(seq)),
    time = naming.stamp_time(stamp), env = env, ext = ext, globals = true }
end

-- Connectable, non-template databases, sorted.
function globals.databases(url)
  local c <close> = pg.connect(url)
  local rows = c:query([[SELECT datname FROM pg_database
    WHERE datallowconn AND NOT datistemplate AND has_database_privilege(datname, 'CONNECT') ORDER BY datname]])
  local out = {}
  for i, r in ipairs(rows) do out[i] = r.datname end
  return out
end

function globals.url(url, db)
  return (require("pgvault.dump").conninfo(url, { dbname = db, password = true }))
end

local function sha256_hex(s)
  return stream.run { stream.string(s), stream.sha256(), stream.discard() }.sha256.sha256
end

-- "ENV--DB" with the database name encoded so that two names never give
-- the same suffix: letters and digits kept, every other byte as _XX; a long
-- one cut, with a digest of the whole name.
function globals.suffix(env, db)
  local enc = db:gsub("[^%w]", function(c) return string.format("_%02x", c:byte()) end)
  if #enc > 40 then enc = enc:sub(1, 31) .. "_" .. sha256_hex(db):sub(1, 8) end
  local s = env .. "--" .. enc
  if not naming.valid_env(s) then
    pgvault.raise("usage", string.format("environment name '%s' is too long to hold database names too", env))
  end
  return s
end

-- Whether the role behind `url` may read role passwords.
local function can_read_passwords(url)
  local c <close> = pg.connect(url)
  local r = c:query("SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT') AS ok")
  return r[1].ok == true or r[1].ok == "t"
end

-- The roles and grants as pg_dumpall --globals-only gives them, into the
-- destination beside the databases' backups.
function globals.dump(o)
  local dump = require "pgvault.dump"
  if not dump.pg_dumpall then
    pgvault.raise("config", "dumping roles and grants needs pg_dumpall support (pgvault.dump.pg_dumpall), which "
      .. "this build lacks")
  end
  local args = { "--globals-only" }
  if not can_read_passwords(o.db) then
    args[#args + 1] = "--no-role-passwords"
    log.info("this role cannot read role passwords: roles are dumped without them (--no-role-passwords)")
  end
  local remote = o.to:sub(1, 5) == "s3://"
  local dir = o.to:gsub("/+$", "")
  local name = naming.stem(o.stamp, o.env) .. globals.SUFFIX .. ".zst" .. (o.recipients and ".age" or "")
  local path = dir .. "/" .. name
  local stages = { dump.pg_dumpall { db = o.db, args = args, pg_bin = o.pg_bin }, stream.sha256 { label = "plain" },
    stream.zstd { level = 19 } }
  local encryption
  if o.recipients then
    local crypto = require "pgvault.crypto"
    stages[#stages + 1] = crypto.encryptor { recipients = o.recipients }
    encryption = { method = "age", recipients = {} }
    for i, r in ipairs(o.recipients) do encryption.recipients[i] = crypto.fingerprint(r) end
  end
  stages[#stages + 1] = stream.sha256 { label = "stored" }
  if remote then
    local so = { url = path }
    for k, v in pairs(o.s3 or {}) do so[k] = v end
    stages[#stages + 1] = require("pgvault.s3").writer(so)
  else
    stages[#stages + 1] = stream.file_writer(path, { no_clobber = true, mode = 384 })
  end
  local r = stream.run(stages)
  local m = manifest.new { environment = o.env, kind = "globals",
    stored = { name = name, bytes = r.stored.bytes, sha256 = r.stored.sha256 },
    plain = { bytes = r.plain.bytes, sha256 = r.plain.sha256 }, encryption = encryption }
  local mpath = naming.manifest_path(path)
  if remote then
    local c <close> = require("pgvault.s3").client(o.s3)
    c:put(mpath, manifest.encode(m), { content_type = "application/json", if_none_match = true })
  else
    manifest.write(path, m, { no_clobber = true })
  end
  return { path = path, manifest_path = mpath, bytes = r.stored.bytes }
end

-- pg_dumpall's "CREATE ROLE name;" made idempotent: a role that exists is
-- left as it is (the ALTER ROLE that follows still sets its attributes).
function globals.idempotent(sql)
  return (("\n" .. sql):gsub("\nCREATE ROLE ([^;\n]+);", function(role)
    return "\nDO $pgvault$ BEGIN CREATE ROLE " .. role .. "; EXCEPTION WHEN duplicate_object THEN "
      .. "RAISE NOTICE 'role exists: kept'; END $pgvault$;"
  end):sub(2))
end

-- Replays a globals file (local or s3://, zstd and age peeled by their
-- magic bytes) into the server of `db` with psql, stopping at an error.
function globals.apply(o)
  local layers = require "lib.layers"
  local dump = require "pgvault.dump"
  local source, head
  if o.src:sub(1, 5) == "s3://" then
    local s3 = require "pgvault.s3"
    local c <close> = s3.client(o.s3)
    head = c:get(o.src, { range = "bytes=0-63" })
    local so = { url = o.src }
    for k, v in pairs(o.s3 or {}) do so[k] = v end
    source = s3.reader(so)
  else
    local f, err = io.open(o.src, "rb")
    if not f then pgvault.raise("io", "cannot open " .. o.src .. ": " .. tostring(err), { path = o.src }) end
    head = f:read(64) or ""
    f:close()
    source = stream.file_reader(o.src)
  end
  local list = {}
  local outer = layers.sniff(head)
  if outer == "age" then
    list[1] = "age"
    if o.src:gsub("%.age$", ""):match("%.zst$") then list[2] = "zstd" end
  elseif outer == "zstd" then
    list[1] = "zstd"
  end
  local stages = { source }
  for _, s in ipairs(layers.stages(list, { identity_files = o.identity_files })) do stages[#stages + 1] = s end
  stages[#stages + 1] = stream.buffer { max = 256 << 20 }
  local sql = stream.run(stages).buffer.data
  if not sql:find("CREATE ROLE", 1, true) and not sql:find("PostgreSQL database cluster dump", 1, true) then
    pgvault.raise("verify", o.src .. " is not a dump of roles and grants (pg_dumpall --globals-only)")
  end
  stream.run { stream.string(globals.idempotent(sql)), dump.psql { db = o.db, pg_bin = o.pg_bin } }
  log.info("roles and grants from %s applied", o.src)
end

return globals
