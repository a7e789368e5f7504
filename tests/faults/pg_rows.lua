-- The PostgreSQL rows of the fault matrix (format: tests/faults/matrix.lua):
-- the dumping backend terminated in the middle of its COPY, the server
-- restarted in the middle of a restore (a cluster of the row's own), the
-- server's disk full under a restore or a backup (ditto), every connection
-- slot taken (ditto), and a statement timeout set on the role the command
-- connects as.
local t = require "harness.testing"
local h = require "harness.env"
local children = require "harness.children"
local services = require "harness.services"
local pg = require "pgvault.pg"
local proc = require "pgvault.proc"

local rows = {}

local function add(row) rows[#rows + 1] = row end

-- The first row of `sql` on connection c, polled until it has one (or
-- `seconds` pass).
local function poll(c, sql, seconds)
  local deadline = proc.now() + seconds
  repeat
    local r = c:query(sql)
    if r[1] then return r[1] end
    proc.sleep(0.02)
  until proc.now() > deadline
  return nil
end

-- pg_dump's backend, caught in its COPY: pgvault is stopped (SIGSTOP) so
-- that pg_dump and its backend wait with the COPY under way, the backend is
-- terminated, pgvault continues.
local function terminate_mid_dump(ctx, pid)
  t.ok(children.find(pid, "pg_dump", nil, 60), ctx.name .. ": pg_dump started")
  -- (this row's own pg_dump: other files' rows run at the same time)
  local mine = "application_name = 'pg_dump' AND datname = '" .. ctx.source_name .. "'"
  local c <close> = pg.connect(ctx.pg.admin_url("postgres"))
  -- connected first: pgvault hands pg_dump its password, and must not be
  -- stopped before it has
  t.ok(poll(c, "SELECT pid FROM pg_stat_activity WHERE " .. mine, 60), ctx.name .. ": pg_dump connected")
  proc.kill(pid, "STOP")
  local ok, err = pcall(function()
    local b = poll(c, "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'COPY %' AND "
      .. mine, 60)
    if not b then
      for _, a in ipairs(c:query("SELECT application_name, state, query FROM pg_stat_activity")) do
        io.stderr:write(string.format("  %s | %s | %s\n", a.application_name, a.state, a.query))
      end
    end
    t.ok(b, ctx.name .. ": pg_dump's backend in its COPY")
    c:query("SELECT pg_terminate_backend($1)", b.pid)
  end)
  proc.kill(pid, "CONT")
  if not ok then error(err, 0) end
end

for _, op in ipairs({ "backup_dir", "backup_bucket", "nightly" }) do
  add({ op = op, fault = "the dumping backend terminated (pg_terminate_backend)", at = "the COPY of a table",
    outcome = "fails", message = (op == "nightly" and "nightly faults failed at backup: .*" or "") .. "pg_dump",
    short = op == "backup_dir",
    holds = "exit 1, one line with pg_dump's error; nothing under a final name, no temporary file, no "
      .. "multipart upload left" .. (op == "nightly" and "; the lock released, the summary says FAILED" or ""),
    during = terminate_mid_dump })
end

-- The restore's pg_restore at work in the new database, then a restart
-- of the row's own cluster.
local function restart_mid_restore(ctx, pid)
  t.ok(children.find(pid, "pg_restore", nil, 60), ctx.name .. ": pg_restore started")
  local c = pg.connect(ctx.pg.admin_url("postgres"))
  local b = poll(c, "SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_restore' AND datname LIKE '"
    .. ctx.live .. "_restore_%' AND state = 'active'", 60)
  c:close()
  t.ok(b, ctx.name .. ": pg_restore's backend at work")
  services.restart_pg(ctx.pg)
end

for _, op in ipairs({ "restore_dir", "restore_bucket" }) do
  add({ op = op, fault = "the server restarted", at = "pg_restore loading the new database", outcome = "fails",
    message = "restore into %S+ failed", short = op == "restore_dir",
    holds = "exit 1, one line saying the live database was left as it was; the half-restored database is "
      .. "dropped (once the server answers again)",
    cluster = function(ctx) ctx.pg = require("faults.matrix").own_cluster(ctx) end,
    during = restart_mid_restore })
end

-- The server's disk full: the row's own cluster has a tablespace on a
-- 16 MiB tmpfs, and template0 moved there, so that a new database (the
-- restore's, CREATE DATABASE ... TEMPLATE template0) lands on it: its
-- catalog (~8 MiB) fits, the ~15 MiB of rows pg_restore loads next do
-- not. WAL and the cluster's own files stay on the big disk: with those
-- full too, PostgreSQL itself stops (a checkpoint that cannot write
-- PANICs), and no client can promise anything then.
local function disk_cluster(ctx)
  local matrix = require "faults.matrix"
  ctx.pg = matrix.own_cluster(ctx)
  ctx.disk = h.mount_tmpfs("16m")
  local r = proc.run({ "chown", "postgres:postgres", ctx.disk })
  assert(r.code == 0, r.stderr)
  local admin = ctx.pg.admin_url("postgres")
  h.psql(admin, string.format("CREATE TABLESPACE faults_small LOCATION '%s';", ctx.disk))
  h.psql(admin, "ALTER DATABASE template0 SET TABLESPACE faults_small;")
  if ctx.op:match("^backup") then
    -- the backup's source on that disk, which is then filled up
    local url = ctx.pg.url(ctx.source_name)
    h.psql(admin, string.format("CREATE DATABASE %s OWNER %s TABLESPACE faults_small;", ctx.source_name, ctx.pg.user))
    h.psql(url, "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 20000) g;")
    ctx.pg_source = url
  end
end

-- Fills the tablespace's disk up (before a backup).
local function fill_disk(ctx)
  proc.run({ "dd", "if=/dev/zero", "of=" .. ctx.disk .. "/filler", "bs=64k" })
  local r = proc.run({ "df", "-k", "--output=avail", ctx.disk })
  t.eq(r.stdout:match("(%d+)%s*$"), "0", ctx.name .. ": the disk is full")
end

local function no_restore_lock(ctx)
  t.eq(h.psql(ctx.pg.admin_url("postgres"), "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory';"), "0\n",
    ctx.name .. ": no advisory lock held (the restore's lock released)")
end

for _, op in ipairs({ "restore_dir", "restore_bucket" }) do
  add({ op = op, fault = "the server's disk full (the new database's tablespace)",
    at = "pg_restore loading the new database", outcome = "fails",
    message = "restore into %S+ failed %(database %S+ left as it was%): .*No space left on device",
    short = op == "restore_dir",
    holds = "exit 1, one line with the server's \"No space left on device\"; the half-restored database dropped, the "
      .. "live one untouched, the restore's lock released",
    cluster = disk_cluster, check = no_restore_lock })
end

-- A backup only reads: the server's disk full does not stop it.
add({ op = "backup_dir", fault = "the server's disk full (the database's tablespace)", at = "the whole backup",
  outcome = "completes",
  short = false, holds = "completes: pg_dump only reads (its snapshot writes nothing on the server)",
  cluster = disk_cluster, setup = fill_disk,
  after = function(ctx) os.remove(ctx.disk .. "/filler") end })

-- Every connection slot a role may use is taken.
local function full_cluster(ctx)
  local matrix = require "faults.matrix"
  ctx.pg = matrix.own_cluster(ctx, { max_connections = 6, superuser_reserved_connections = 3 })
  if ctx.op:match("^backup") then
    local url = ctx.pg.url(ctx.source_name)
    h.psql(ctx.pg.admin_url("postgres"), string.format("CREATE DATABASE %s OWNER %s;", ctx.source_name, ctx.pg.user))
    h.psql(url, "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g;")
    ctx.pg_source = url
  end
end

for _, op in ipairs({ "backup_dir", "restore_dir" }) do
  add({ op = op, fault = "max_connections reached", at = "connecting", outcome = "fails",
    message = "cannot connect to database %S+ as user %S+ on 127%.0%.0%.1 port %d+: .*remaining connection slots "
      .. "are reserved", short = false,
    holds = "exit 1 at once, one line with the server's reason; nothing created",
    cluster = full_cluster,
    setup = function(ctx) require("faults.matrix").hold_connections(ctx, ctx.pg.url("postgres"), 3) end })
end

-- The server is not there: the URL's port has nothing listening
-- (127.0.0.1 port 1). The checks still look at the suite's cluster.
local function refused(ctx)
  local base = ctx.pg
  local c = setmetatable({}, { __index = base })
  function c.url(db) return string.format("postgresql://%s:%s@127.0.0.1:1/%s", base.user, base.password, db) end
  ctx.pg = c
  if not ctx.op:match("^restore") then ctx.pg_source = c.url(ctx.source_name) end
end

for _, op in ipairs({ "backup_dir", "backup_bucket", "restore_dir", "restore_bucket", "nightly" }) do
  add({ op = op, fault = "connection refused", at = "connecting", outcome = "fails",
    message = (op == "nightly" and "nightly faults failed at backup: " or "")
      .. "cannot connect to database %S+ as user %S+ on 127%.0%.0%.1 port 1: .*Connection refused.*; check the "
      .. "host and port, and that the server is running",
    short = op == "restore_bucket",
    holds = "exit 1 at once, one line naming the database, user, host and port, without the password; nothing "
      .. "written, no upload started, the live database untouched",
    cluster = refused })
end

-- A role whose statement_timeout would cancel anything slower than 1 ms.
local function slow_role(ctx)
  local role = "faults_" .. ctx.tag .. "_timeout"
  local admin = h.pg().admin_url("postgres")
  -- (a superuser: a restore gives its objects to the suite's role, which
  -- an ordinary member of it may not do in a schema it cannot create in)
  h.psql(admin, string.format("DROP ROLE IF EXISTS %s; CREATE ROLE %s LOGIN SUPERUSER PASSWORD 'timeout-pw'; "
    .. "ALTER ROLE %s SET statement_timeout = '1ms';", role, role, role))
  local base = h.pg()
  local c = {}
  for k, v in pairs(base) do c[k] = v end
  c.user, c.password = role, "timeout-pw"
  function c.url(db) return string.format("postgresql://%s:timeout-pw@127.0.0.1:%d/%s", role, base.port, db) end
  c.admin_url = base.admin_url
  ctx.pg = c
  if ctx.op:match("^backup") or ctx.op == "nightly" then
    h.psql(base.url(ctx.source_name), string.format("GRANT SELECT ON t TO %s;", role))
    ctx.pg_source = c.url(ctx.source_name)
  end
  require("faults.matrix").on_cleanup(ctx, function()
    if ctx.pg_source then h.psql(base.url(ctx.source_name), string.format("REVOKE ALL ON t FROM %s;", role)) end
    h.psql(admin, string.format("DROP OWNED BY %s; DROP ROLE %s;", role, role))
  end)
end

for _, op in ipairs({ "backup_dir", "restore_dir", "nightly" }) do
  add({ op = op, fault = "statement_timeout = 1ms set on the role", at = "every statement", outcome = "completes",
    short = op == "restore_dir",
    holds = "completes: pgvault's own sessions, pg_dump and pg_restore run without the role's timeout",
    cluster = slow_role })
end

return rows
