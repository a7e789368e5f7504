-- Every database of a server, and what belongs to none of them: the roles
-- and grants (`backup --all-databases`, `nightly --all-databases`,
-- `restore --globals FILE`).
--
--   globals.databases(url) -> { name, ... }     connectable, non-template, sorted
--   globals.suffix(env, db) -> "prod--app"      the database in the backup's name
--   globals.url(url, db) -> url for database db on the same server
--   globals.backup_all(o) -> { backups = {b...}, globals = g, failed = {{name=, err=}}, total = n }
--       lib.backup.run for each database (o: its options; suffix ENV--DB, one time stamp), then
--       globals.dump; a database that fails is logged and the others go on
--   globals.check(res, what)                    raises "N of M failed: DB: why; ..." after backup_all
--   globals.dump{ db =, to =, env =, stamp =, recipients = {age recipients} | nil, s3 =, pg_bin =,
--       sign =, sign_password_file = } -> { path =, manifest_path =, bytes =, manifest = }
--       pg_dumpall --globals-only into DEST/STAMP_ENV_globals.sql.zst[.age] under a reserved name
--       (lib.destination: never overwritten), block digests, signature and manifest as a backup's
--   globals.read{ src =, s3 =, identities =, trust = {KEY.pub...}, stored_only = } -> sql | nil
--       such a file (a path or s3://), authenticated (lib.trust) and checked against its manifest
--       as it streams; stored_only: only the stored bytes are checked (no identity needed)
--   globals.apply{ src =, db =, identities =, trust =, s3 =, pg_bin = }  replays it with psql
--
-- A role that may not read passwords (pg_authid; Neon's roles) gets
-- --no-role-passwords. Replaying creates roles and tablespaces that are
-- missing and leaves existing ones (CREATE ROLE wrapped to skip
-- duplicate_object; CREATE TABLESPACE of one the server has left out), so a
-- restore onto a server that has some of them does not stop at the first.
local pg = require "pgvault.pg"
local pgvault = require "pgvault"
local stream = require "pgvault.stream"
local manifest = require "lib.manifest"
local naming = require "lib.naming"
local pipeline = require "lib.pipeline"

local globals = {}

globals.SUFFIX = "_globals.sql"
-- A roles-and-grants dump is small; more than this is not one.
globals.MAX_SQL = 256 << 20

-- backup's --all-databases (a configuration key: all_databases = true).
globals.OPTIONS = { require("lib.config").option("all_databases") }

-- restore's --globals FILE.
globals.RESTORE_OPTIONS = {
  { "globals", nil, "FILE", "first apply the roles and grants in FILE (…_globals.sql.zst[.age] of backup "
    .. "--all-databases: a file or s3://…), so that the database's owner and grantees exist" },
}

local function message(err) return pgvault.is_error(err) and err.message or tostring(err) end

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

-- ------------------------------------------------------------------------
-- Every database
-- ------------------------------------------------------------------------

local function interrupted(err)
  return pgvault.signalled() or (pgvault.is_error(err) and err.kind == "interrupted")
end

function globals.backup_all(o)
  local backup = require "lib.backup"
  -- Everything that would fail every database alike is checked once, first.
  local checked = backup.options(o)
  local key = require("lib.trust").signer(checked)
  if key then key:close() end
  local res = { backups = {}, failed = {} }
  local names = globals.databases(checked.db)
  res.total = #names + 1
  log.info("backing up %d databases and the roles and grants to %s", #names, checked.to)
  local function failed(name, err)
    if interrupted(err) then error(err, 0) end
    log.error("%s: %s", name, message(err))
    res.failed[#res.failed + 1] = { name = name, err = err }
  end
  for _, name in ipairs(names) do
    local one = {}
    for k, v in pairs(checked) do one[k] = v end
    one.db, one.suffix, one.all_databases = globals.url(checked.db, name), globals.suffix(checked.suffix, name), nil
    one.recipient, one.recipients_file = nil, nil -- in one.recipients, checked
    local ok, b = pcall(backup.run, one)
    if ok then res.backups[#res.backups + 1] = b else failed(name, b) end
  end
  local ok, g = pcall(globals.dump, { db = checked.db, to = checked.to, env = checked.suffix,
    stamp = naming.stamp(checked.time), recipients = checked.recipients, s3 = checked.s3, pg_bin = checked.pg_bin,
    sign = checked.sign, sign_password_file = checked.sign_password_file })
  if ok then res.globals = g else failed("roles and grants", g) end
  return res
end

function globals.check(res)
  if #res.failed == 0 then return end
  local parts = {}
  for _, f in ipairs(res.failed) do parts[#parts + 1] = f.name .. ": " .. message(f.err) end
  local first = res.failed[1].err
  pgvault.raise(pgvault.is_error(first) and first.kind or "internal", string.format("%d of %d failed: %s",
    #res.failed, res.total, table.concat(parts, "; ")))
end

-- `backup --all-databases`: the backups and the roles, each path on a line
-- of standard output; raises when any failed.
function globals.run(o)
  local res = globals.backup_all(o)
  for _, b in ipairs(res.backups) do print(b.path) end
  if res.globals then print(res.globals.path) end
  io.stdout:flush()
  globals.check(res)
  log.info("backed up %d databases and the roles and grants", #res.backups)
end

-- ------------------------------------------------------------------------
-- The roles and grants: dump
-- ------------------------------------------------------------------------

-- Whether the role behind `url` may read role passwords.
local function can_read_passwords(url)
  local c <close> = pg.connect(url)
  local r = c:query("SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT') AS ok")
  return r[1].ok == true or r[1].ok == "t"
end

local function encryption_of(recipients)
  if not recipients then return nil end
  local crypto = require "pgvault.crypto"
  local e = { method = "age", recipients = require("lib.json").array() }
  for i, r in ipairs(recipients) do e.recipients[i] = crypto.fingerprint(r) end
  return e
end

-- The roles and grants as pg_dumpall --globals-only gives them, into the
-- destination beside the databases' backups: the same steps as a backup
-- (lib.backup.run): a reserved name, the manifest last, signed with a key.
function globals.dump(o)
  local dump = require "pgvault.dump"
  local trust = require "lib.trust"
  local signer <close> = trust.signer(o)
  local args = { "--globals-only" }
  if not can_read_passwords(o.db) then
    args[#args + 1] = "--no-role-passwords"
    log.info("this role cannot read role passwords: roles are dumped without them (--no-role-passwords)")
  elseif not o.recipients then
    log.warn("the roles' password hashes go into the roles-and-grants dump unencrypted: whoever can read %s can "
      .. "try to crack them (give -r RECIPIENT to encrypt it)", o.to)
  end
  local dest <close> = require("lib.destination").open(o.to, { s3 = o.s3 })
  local stages = { dump.pg_dumpall { db = o.db, args = args, pg_bin = o.pg_bin }, stream.sha256 { label = "plain" },
    stream.zstd { level = 19 } }
  if o.recipients then stages[#stages + 1] = require("pgvault.crypto").encryptor { recipients = o.recipients } end
  stages[#stages + 1] = stream.sha256 { label = "stored" }
  stages[#stages + 1] = trust.block_digests(trust.block_size(o.to, o.s3))
  dest:reserve(o.stamp, o.env, ".zst" .. (o.recipients and ".age" or ""), globals.SUFFIX)
  stages[#stages + 1] = dest:writer()
  local r = stream.run(stages)
  dest.archive_written = true
  local m = manifest.new { environment = o.env, kind = "globals", compression = { method = "zstd", level = 19 },
    stored = { name = dest.name, bytes = r.stored.bytes, sha256 = r.stored.sha256 },
    plain = { bytes = r.plain.bytes, sha256 = r.plain.sha256 }, encryption = encryption_of(o.recipients) }
  trust.seal_and_sign({ recipients = o.recipients }, dest, m, r, signer)
  local mpath = dest:commit(m)
  log.info("roles and grants: %s (%d bytes)", dest.path, r.stored.bytes)
  return { path = dest.path, manifest_path = mpath, bytes = r.stored.bytes, manifest = m }
end

-- ------------------------------------------------------------------------
-- The roles and grants: read and replay
-- ------------------------------------------------------------------------

local function open_dump(o)
  local ok, src = pcall(require("lib.source").open, o.src, { s3 = o.s3, manifest = "optional" })
  if ok then return src end
  if pgvault.is_error(src) and src.kind == "verify" and src.message:find("is not a backup", 1, true) then
    pgvault.raise("verify", string.format("%s is not a roles-and-grants dump of pgvault (…_globals.sql.zst[.age]); "
      .. "apply a plain pg_dumpall file with psql -f", o.src))
  end
  error(src, 0)
end

function globals.read(o)
  local layers = require "lib.layers"
  local trust = require "lib.trust"
  local src <close> = open_dump(o)
  local job = { trust = o.trust, identities = o.identities or {} }
  trust.authenticate(job, src)
  local stages = { src:reader(), trust.verifier(src), require("lib.restore").checksum(src) }
  if o.stored_only then
    stream.run(pipeline.flatten { stages, stream.discard() })
    return nil
  end
  local sql = stream.run(pipeline.flatten { stages, layers.stages(src.layers, { identities = job.identities,
    name = src.name }), stream.buffer { max = globals.MAX_SQL } }).buffer.data
  if not sql:find("PostgreSQL database cluster dump", 1, true) then
    pgvault.raise("verify", o.src .. " is not a dump of roles and grants (pg_dumpall --globals-only)")
  end
  return sql
end

-- pg_dumpall's "CREATE ROLE name;" made idempotent: a role that exists is
-- left as it is (the ALTER ROLE that follows still sets its attributes).
function globals.idempotent(sql)
  return (("\n" .. sql):gsub("\nCREATE ROLE ([^;\n]+);", function(role)
    local said = role:gsub("'", "''"):gsub("%%", "%%%%")
    return "\nDO $pgvault$ BEGIN CREATE ROLE " .. role .. "; EXCEPTION WHEN duplicate_object THEN "
      .. "RAISE NOTICE 'role " .. said .. " exists: kept'; END $pgvault$;"
  end):sub(2))
end

-- The names of the tablespaces the server of `url` has. Replaying roles
-- and grants needs a superuser or a role with CREATEROLE (PostgreSQL checks
-- it even for a role that exists): anyone else is told so before anything
-- is applied.
local function tablespaces(url, src)
  local c <close> = pg.connect(url)
  local me = c:query("SELECT current_user AS name, rolsuper OR rolcreaterole AS may "
    .. "FROM pg_roles WHERE rolname = current_user")[1]
  if not (me.may == true or me.may == "t") then
    pgvault.raise("pg", string.format("applying the roles and grants of %s needs a superuser or a role with "
      .. "CREATEROLE, and %s is neither: give --db the URL of such a role", src, me.name))
  end
  local have = {}
  for _, r in ipairs(c:query("SELECT spcname FROM pg_tablespace")) do have[r.spcname] = true end
  return have
end

-- pg_dumpall's "CREATE TABLESPACE name OWNER ..." of a tablespace in `have`
-- (a set of names) is left out, so that replaying onto a server that has
-- it goes on (CREATE TABLESPACE cannot be wrapped like CREATE ROLE: it does
-- not run inside a transaction block). Its ALTER, GRANT and COMMENT stay.
function globals.skip_tablespaces(sql, have)
  return (("\n" .. sql):gsub("\nCREATE TABLESPACE ([^\n]-) OWNER [^\n]*", function(id)
    local name = id:match('^"(.*)"$')
    name = name and name:gsub('""', '"') or id
    if not have[name] then return nil end
    log.info("tablespace %s exists on the server: kept as it is", name)
    return "\n-- pgvault: tablespace " .. id .. " exists: not created"
  end):sub(2))
end

-- `restore --globals FILE`, once the restore's plan has reached the server
-- (job.admin, its maintenance database): FILE applied there, with the
-- restore's identities, trusted keys and S3 settings.
function globals.restore_step(job)
  local maintenance = job.admin:query("SELECT current_database() AS name")[1].name
  globals.apply { src = job.globals, db = globals.url(job.db, maintenance), identities = job.identities,
    trust = job.trust, s3 = job.s3, pg_bin = job.pg_bin }
end

-- Replays a roles-and-grants dump into the server of `db` with psql,
-- stopping at an error.
function globals.apply(o)
  local have = tablespaces(o.db, o.src)
  local sql = globals.skip_tablespaces(globals.read(o), have)
  local ok, err = pcall(stream.run, { stream.string(globals.idempotent(sql)),
    require("pgvault.dump").psql { db = o.db, pg_bin = o.pg_bin } })
  if not ok then
    if pgvault.is_error(err) and not interrupted(err) then
      err.message = "applying the roles and grants of " .. o.src .. " failed: " .. err.message
    end
    error(err, 0)
  end
  log.info("roles and grants from %s applied", o.src)
end

return globals
