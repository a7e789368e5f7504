-- The fault matrix's restores: from a directory (restore_dir) and from a
-- bucket (restore_bucket), each over a live database that holds a marker
-- table. What must hold: a completed restore swapped in a database with
-- every row and kept the live one as <db>_old_<stamp>; a failed or
-- interrupted one left the live database as it was and no other database
-- behind (no half-restored <db>_restore_<stamp>); after SIGKILL, the next
-- restore completes and drops what the killed one left.
local t = require "harness.testing"
local h = require "harness.env"
local s3h = require "harness.s3"
local services = require "harness.services"
local fs = require "pgvault.fs"
local pg = require "pgvault.pg"
local proc = require "pgvault.proc"

return function(matrix)
  -- A cluster of the row's own (for faults that would disturb the suite's:
  -- a restart, every connection taken); stopped after the row. Returns
  -- what h.pg() returns for the suite's.
  function matrix.own_cluster(ctx, settings)
    local dir = ctx.base .. "/cluster"
    fs.mkdir_p(dir)
    -- the server runs as postgres, which must reach its directory
    local d = dir
    while d ~= "/" and d ~= "" do
      fs.chmod(d, fs.stat(d).mode | 73) -- o+x, g+x, u+x: traverse only
      d = d:match("^(.*)/[^/]*$")
      if d == h.root or #d <= 4 then break end
    end
    local c = services.start_pg(dir, nil, settings)
    matrix.on_cleanup(ctx, function() services.stop_pg(c) end)
    return h.cluster(c)
  end

  local function live_name() return "faults_" .. matrix.tag .. "_live" end

  -- The databases of this file's live database, its old copies and
  -- anything a restore made beside it, on the row's cluster.
  local function databases(ctx)
    local out = {}
    local prefix = live_name()
    for name in h.psql(ctx.pg.admin_url("postgres"), "SELECT datname FROM pg_database ORDER BY 1;"):gmatch("[^\n]+") do
      if name:sub(1, #prefix) == prefix then out[#out + 1] = name end
    end
    return out
  end

  local function drop_all(ctx)
    for _, name in ipairs(databases(ctx)) do
      h.psql(ctx.pg.admin_url("postgres"), string.format('DROP DATABASE IF EXISTS "%s" WITH (FORCE);', name))
    end
  end

  local function tables(ctx, db)
    return h.psql(ctx.pg.admin_url(db), "SELECT string_agg(relname, ' ' ORDER BY relname) FROM pg_class "
      .. "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace;")
  end

  -- The live database: a marker table and a row that says so.
  local function make_live(ctx)
    drop_all(ctx)
    local name = live_name()
    h.psql(ctx.pg.admin_url("postgres"), string.format("CREATE DATABASE %s OWNER %s;", name, ctx.pg.user))
    h.psql(ctx.pg.admin_url(name), "CREATE TABLE live_marker (note text); "
      .. "INSERT INTO live_marker VALUES ('untouched');")
    ctx.live = name
  end

  local function untouched(ctx)
    t.eq(databases(ctx), { ctx.live }, ctx.name .. ": the live database, and no other (none half-restored)")
    t.eq(tables(ctx, ctx.live), "live_marker\n", ctx.name .. ": the live database is as it was")
    t.eq(h.psql(ctx.pg.admin_url(ctx.live), "SELECT note FROM live_marker;"), "untouched\n", ctx.name .. ": its rows")
  end

  -- The restored database took the live one's name; the live one is kept
  -- as <db>_old_<stamp> (one per completed restore).
  local function swapped(ctx, restores)
    local dbs = databases(ctx)
    local old = 0
    for _, name in ipairs(dbs) do
      if name ~= ctx.live then
        t.match(name, "^" .. ctx.live .. "_old_%d+", ctx.name .. ": only old copies beside the live database: "
          .. table.concat(dbs, " "))
        old = old + 1
      end
    end
    t.ok(restores[old], ctx.name .. ": old copies: " .. table.concat(dbs, " "))
    t.eq(tables(ctx, ctx.live), "t\n", ctx.name .. ": the restored database under the live name")
    t.eq(h.psql(ctx.pg.admin_url(ctx.live), "SELECT count(*) FROM t;"), ctx.rows, ctx.name .. ": every row")
  end

  local function check(ctx, row)
    local outcome = matrix.outcome(ctx, row)
    if outcome == "killed" then return end
    if outcome == "completes" then swapped(ctx, { [1] = true }) else untouched(ctx) end
  end

  -- After SIGKILL: the next restore completes and nothing of the killed
  -- one is left (its half-restored database dropped).
  local function after_kill(ctx, row)
    -- The killed run's server session ends once its statement does (a
    -- CREATE DATABASE runs to its end): until then it holds the restore
    -- lock, and the next restore is refused naming it.
    local deadline = proc.now() + 60
    while proc.now() < deadline and h.psql(ctx.pg.admin_url("postgres"), "SELECT count(*) FROM pg_locks "
      .. "WHERE locktype = 'advisory' AND ((classid::bigint << 32) | objid::bigint) = hashtext('pgvault restore "
      .. ctx.live .. "')::bigint;") ~= "0\n" do
      proc.sleep(0.1)
    end
    ctx.args, ctx.env = {}, {}
    local r = matrix.operations[row.op].run(ctx, nil)
    t.eq(r.code, 0, ctx.name .. ": the next restore completes: " .. r.stderr)
    swapped(ctx, { [1] = true, [2] = true })
  end

  local function restore(ctx, row, from)
    return matrix.run_command(ctx, row, { "restore", from, "--db", ctx.pg.url(ctx.live), "--database",
      ctx.source_name })
  end

  local function op(prepare, run)
    return {
      prepare = prepare,
      setup = make_live,
      run = run,
      check = check,
      after_kill = after_kill,
      cleanup = drop_all,
    }
  end

  local function backup_to(dest, env)
    local src = matrix.source()
    local r = h.pgvault({ "backup", "--db", src.source, "--to", dest, "--suffix", "faults" }, { env = env })
    assert(r.code == 0, r.stderr)
    return { source_name = src.source_name, rows = src.rows, source = src.source }
  end

  matrix.operations.restore_dir = op(function()
    local dir = h.tmpdir() .. "/backups"
    local p = backup_to(dir)
    p.backups = dir
    return p
  end, function(ctx, row) return restore(ctx, row, ctx.backups .. "/latest") end)

  matrix.operations.restore_bucket = op(function(tag)
    local bucket = s3h.make_bucket("faults-" .. tag .. "-restore")
    local p = backup_to("s3://" .. bucket .. "/p/", s3h.env())
    p.backup = "s3://" .. bucket .. "/p/latest"
    return p
  end, function(ctx, row) return restore(ctx, row, ctx.backup) end)

  -- Connections of the row's own to a cluster, held until the row ends.
  function matrix.hold_connections(ctx, url, n)
    local held = {}
    for i = 1, n do held[i] = pg.connect(url) end
    matrix.on_cleanup(ctx, function() for _, c in ipairs(held) do c:close() end end)
    return held
  end
end
