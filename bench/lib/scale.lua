-- The scale datasets of the benchmarks (issues 14 and 17): databases of
-- 0.5, 2, 3 and 5 GB of realistic rows, 2,000 tables, 100,000 large
-- objects, one 1 GB row. They take minutes to hours to build, so they live
-- in a PostgreSQL cluster kept between runs in $PGVAULT_BENCH_DATA
-- (default /tmp/pgvault-bench-data; never in the repository): each is
-- built on demand the first time a bench asks for it and marked complete
-- with a comment on its database, so an interrupted build is redone.
-- `bin/pgvault run bench/scale.lua --drop` removes the cluster.
local bench = require "lib.bench"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"

local scale = {}

local PG_BIN = "/usr/lib/postgresql/15/bin"
scale.dir = os.getenv("PGVAULT_BENCH_DATA") or "/tmp/pgvault-bench-data"

local services = require "harness.services"
local is_root, as_postgres = services.is_root, services.as_postgres

local function must(argv, what, timeout)
  argv.timeout = timeout or 300
  local r = proc.run(argv)
  if r.code ~= 0 then error(what .. " failed: " .. r.stderr .. r.stdout, 2) end
  return r
end

local function random_hex(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local s = f:read(n):gsub(".", function(c) return string.format("%02x", c:byte()) end)
  f:close()
  return s
end

-- The bench role's password, made once and kept beside the cluster (0600),
-- so that benches running at the same time agree on it.
local function password()
  local path = scale.dir .. "/password"
  if not fs.exists(path) then fs.write_file(path, random_hex(16), { mode = 384 }) end
  return fs.read_file(path)
end

-- The port of a cluster already running here (another bench started it).
local function running_port(data)
  local f = io.open(data .. "/postmaster.pid", "r")
  local text = f and f:read("a") or ""
  if f then f:close() end
  local pid, port = text:match("^(%d+)\n[^\n]*\n[^\n]*\n(%d+)\n")
  if pid and proc.run({ "kill", "-0", pid }).code == 0 then return tonumber(port) end
end

-- Starts the kept cluster (made by initdb the first time), or joins it
-- when another bench has started it; returns the same description as the
-- test services (host, port, user, password, bindir, socket_dir) and a
-- stop function (which stops only a cluster this call started).
function scale.start()
  local data, sock = scale.dir .. "/data", scale.dir .. "/sock"
  fs.mkdir_p(sock)
  fs.chmod(scale.dir, 493)
  if is_root then must({ "chown", "-R", "postgres:postgres", scale.dir }, "chown") end
  if not fs.exists(data .. "/PG_VERSION") then
    must(as_postgres({ PG_BIN .. "/initdb", "-D", data, "-U", "postgres", "--auth-local=trust",
      "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=en_US.UTF-8", "-N" }), "initdb")
  end
  local port = running_port(data)
  local started = not port
  for _ = 1, port and 0 or 20 do
    local candidate = math.random(20000, 45000)
    local opts = string.format("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off " ..
      "-c full_page_writes=off -c max_connections=100 -c max_wal_size=4GB -c max_locks_per_transaction=512",
      candidate, sock)
    local r = proc.run(as_postgres({ PG_BIN .. "/pg_ctl", "-D", data, "-l", scale.dir .. "/server.log", "-w",
      "-t", "120", "-o", opts, "start", timeout = 180 }))
    if r.code == 0 then
      port = candidate
      break
    end
  end
  if not port then error("could not start the bench cluster in " .. scale.dir .. " (see server.log)") end
  local pg = { host = "127.0.0.1", port = port, socket_dir = sock, user = "pgvault_bench",
    password = password(), bindir = PG_BIN, data_dir = data }
  bench.admin_psql(pg, string.format("DO $$ BEGIN CREATE ROLE pgvault_bench LOGIN CREATEDB; " ..
    "EXCEPTION WHEN duplicate_object THEN NULL; END $$;\nALTER ROLE pgvault_bench PASSWORD '%s';", pg.password))
  local stopped = not started
  return pg, function()
    if stopped then return end
    stopped = true
    proc.run(as_postgres({ PG_BIN .. "/pg_ctl", "-D", data, "-m", "fast", "-w", "stop", timeout = 120 }))
  end
end

local function complete(pg, db, mark)
  local r = proc.run({ pg.bindir .. "/psql", "-X", "-A", "-t", "-h", pg.socket_dir, "-p", tostring(pg.port),
    "-U", "postgres", "-d", "postgres", "-c",
    "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '" .. db .. "'" })
  return r.code == 0 and r.stdout:match("^(.-)%s*$") == mark
end

local function mark_complete(pg, db, mark)
  bench.admin_psql(pg, string.format("COMMENT ON DATABASE %s IS '%s';", db, mark))
end

-- Builds `db` with `build(pg, db)` unless a complete one is there; prints
-- how long a build took.
local function ensure(pg, db, mark, build)
  if complete(pg, db, mark) then return end
  io.stdout:write(string.format("building %s (%s) ...\n", db, mark))
  io.stdout:flush()
  local t0 = proc.now()
  build(pg, db)
  bench.settle(pg)
  mark_complete(pg, db, mark)
  print(string.format("built %s in %.0f s", db, proc.now() - t0))
end

local function fresh(pg, db)
  bench.admin_psql(pg, string.format("DROP DATABASE IF EXISTS %s WITH (FORCE);\n" ..
    "CREATE DATABASE %s OWNER %s TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'en_US.UTF-8' " ..
    "LC_CTYPE 'en_US.UTF-8';", db, db, pg.user))
end

-- About `mb` MB of customers and events (bench.dataset); the name is
-- scale_<mb>.
function scale.rows(pg, mb)
  local db = "scale_" .. math.tointeger(mb)
  ensure(pg, db, "pgvault bench rows " .. mb .. " MB", function() bench.dataset(pg, db, mb) end)
  return db
end

-- 2,000 tables of 50 rows each, with a primary key and a comment.
function scale.tables(pg, n)
  n = n or 2000
  local db = "scale_tables_" .. n
  ensure(pg, db, "pgvault bench " .. n .. " tables", function()
    fresh(pg, db)
    bench.psql(pg, db, string.format([[
DO $$ BEGIN
  FOR i IN 1..%d LOOP
    EXECUTE format('CREATE TABLE t%%s (id int PRIMARY KEY, v text, at timestamptz DEFAULT now())', i);
    EXECUTE format('INSERT INTO t%%s (id, v) SELECT g, md5(g::text) FROM generate_series(1, 50) g', i);
    EXECUTE format('COMMENT ON TABLE t%%s IS %%L', i, 'table ' || i);
  END LOOP;
END $$;
VACUUM (ANALYZE);
]], n))
  end)
  return db
end

-- 100,000 large objects of 1 to 4 KiB of random-looking bytes.
function scale.large_objects(pg, n)
  n = n or 100000
  local db = "scale_lo_" .. n
  ensure(pg, db, "pgvault bench " .. n .. " large objects", function()
    fresh(pg, db)
    for lo = 1, n, 20000 do
      bench.psql(pg, db, string.format([[
SELECT lo_from_bytea(0, decode(repeat(md5(g::text || random()::text), 32 + g %% 96), 'hex'))
FROM generate_series(%d, %d) g;
]], lo, math.min(n, lo + 19999)))
    end
  end)
  return db
end

-- One row holding a 1,000,000,000-byte text value (COPY writes it as one
-- line, under PostgreSQL's 1 GiB limit for a value and a line).
function scale.big_row(pg)
  local db = "scale_big_row"
  ensure(pg, db, "pgvault bench one 1 GB row", function()
    fresh(pg, db)
    bench.psql(pg, db, [[
CREATE TABLE big (id int PRIMARY KEY, v text);
INSERT INTO big SELECT 1, string_agg(md5(g::text || random()::text), '') FROM generate_series(1, 31250000) g;
]])
  end)
  return db
end

function scale.drop()
  if fs.exists(scale.dir) then fs.remove_tree(scale.dir) end
end

return scale
