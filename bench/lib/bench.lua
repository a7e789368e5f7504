-- Shared pieces of the side-by-side benchmarks: the throwaway services, a
-- database of realistic, poorly compressible rows, and a runner that
-- measures wall time and peak RSS of a command with /usr/bin/time.
-- Benchmarks print ratios (pgvault / peer) measured in one run, because
-- these machines are noisy; they never assert on time.
package.path = "tests/?.lua;bench/?.lua;" .. package.path
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local services = require "harness.services"

local bench = {}

bench.root = fs.getcwd()
bench.bin = bench.root .. "/" .. (os.getenv("PGVAULT_BIN") or "bin/pgvault")

-- Starts PostgreSQL and S3 under a temporary directory; returns the
-- description, a work directory and a stop function (also run at exit).
function bench.services()
  local base = fs.tmpdir("pgvault-bench")
  local desc, stop = services.start(base, bench.root)
  local work = base .. "/work"
  fs.mkdir_p(work)
  local function stop_all()
    stop()
    pcall(fs.remove_tree, base)
  end
  return desc, work, stop_all
end

function bench.url(pg, db)
  return string.format("postgresql://%s:%s@127.0.0.1:%d/%s", pg.user, pg.password, pg.port, db)
end

function bench.admin_psql(pg, sql)
  local r = proc.run({ pg.bindir .. "/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", pg.socket_dir,
    "-p", tostring(pg.port), "-U", "postgres", "-d", "postgres", "-f", "-", stdin = sql, timeout = 3600 })
  if r.code ~= 0 then error("psql: " .. r.stderr) end
  return r.stdout
end

function bench.psql(pg, db, sql)
  local r = proc.run({ pg.bindir .. "/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
    "-p", tostring(pg.port), "-U", pg.user, "-d", db, "-f", "-", stdin = sql, timeout = 3600,
    env = { PGPASSWORD = pg.password } })
  if r.code ~= 0 then error("psql: " .. r.stderr) end
  return r.stdout
end

-- The tables of the dataset: customers and events, the data of an
-- application: random text, numbers, timestamps, a few indexes. Random hex
-- and mixed words keep it from compressing the way pgbench's filler does.
local DATASET_SCHEMA = [[
CREATE TABLE customers (
  id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL, city text,
  created_at timestamptz NOT NULL, balance numeric(14,2), notes text);
CREATE TABLE events (
  id bigint PRIMARY KEY, customer_id bigint NOT NULL, kind text NOT NULL, amount numeric(12,2),
  happened_at timestamptz NOT NULL, ip inet, payload text NOT NULL);
]]

local CUSTOMERS = [[
INSERT INTO customers
SELECT g, initcap(substr(md5(g::text), 1, 6)) || ' ' || initcap(substr(md5((g*7)::text), 3, 9)),
       substr(md5((g*3)::text), 1, 10) || '@example.' || (ARRAY['com','org','net','io'])[1 + g %% 4],
       (ARRAY['Lisboa','Zürich','Kraków','São Paulo','Oslo','Nairobi','Osaka','Montréal'])[1 + g %% 8],
       timestamptz '2020-01-01' + (random() * 1500) * interval '1 day',
       round((random() * 100000)::numeric, 2),
       CASE WHEN g %% 5 = 0 THEN NULL ELSE md5(random()::text) || ' ' || md5(random()::text) END
FROM generate_series(1, %d) g;
]]

local EVENTS = [[
INSERT INTO events
SELECT g, 1 + (random() * %d)::bigint,
       (ARRAY['login','purchase','refund','view','logout','signup'])[1 + (random() * 5)::int],
       round((random() * 5000)::numeric, 2),
       timestamptz '2023-01-01' + random() * interval '700 days',
       ('10.' || (random()*255)::int || '.' || (random()*255)::int || '.' || (random()*255)::int)::inet,
       md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) ||
       md5(random()::text) || md5(random()::text) || ' ' || repeat(chr(97 + (random()*25)::int), (random()*40)::int)
FROM generate_series(%d, %d) g;
]]

-- Creates database `db` with about `mb` megabytes of rows that look like an
-- application's (about 330 bytes of table data per event row), events
-- inserted in batches of at most 2 million rows so a large dataset never
-- needs one huge transaction. Returns the database size in bytes.
function bench.dataset(pg, db, mb)
  bench.admin_psql(pg, string.format("DROP DATABASE IF EXISTS %s WITH (FORCE);\n" ..
    "CREATE DATABASE %s OWNER %s TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'en_US.UTF-8' " ..
    "LC_CTYPE 'en_US.UTF-8';", db, db, pg.user))
  local events = math.floor(mb * 1024 * 1024 / 330)
  local customers = math.max(1000, events // 20)
  bench.psql(pg, db, DATASET_SCHEMA .. string.format(CUSTOMERS, customers))
  local batch = 2000000
  for lo = 1, events, batch do
    bench.psql(pg, db, string.format(EVENTS, customers, lo, math.min(events, lo + batch - 1)))
  end
  bench.psql(pg, db, "CREATE INDEX events_customer ON events (customer_id);\n" ..
    "CREATE INDEX events_time ON events (happened_at);\nVACUUM (ANALYZE);")
  local size = bench.psql(pg, db, "SELECT pg_database_size(current_database());")
  bench.settle(pg)
  return tonumber(size)
end

-- Before a timed run: nothing left for autovacuum (the dataset is vacuumed
-- as it is made), no dirty buffers (CHECKPOINT) and no dirty pages waiting
-- for the kernel's writeback (sync), so a run does not pay for the one
-- before it. Not timed.
function bench.settle(pg)
  bench.admin_psql(pg, "CHECKPOINT;")
  proc.run({ "sync" })
end

-- Runs argv under /usr/bin/time; returns {seconds, rss_kb, cpu, code,
-- stderr}: cpu is user + system seconds of the command and its children.
function bench.measure(argv, opts)
  opts = opts or {}
  local full = { "/usr/bin/time", "-f", "@@time %e %M %U %S" }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  full.env, full.stdin, full.cwd, full.timeout = opts.env, opts.stdin, opts.cwd, opts.timeout or 3600
  local t0 = proc.now()
  local r = proc.run(full)
  local wall = proc.now() - t0
  local secs, rss, user, sys = r.stderr:match("@@time ([%d.]+) (%d+) ([%d.]+) ([%d.]+)")
  return { seconds = tonumber(secs) or wall, rss_kb = tonumber(rss) or 0,
    cpu = (tonumber(user) or 0) + (tonumber(sys) or 0), code = r.code,
    stdout = r.stdout, stderr = r.stderr:gsub("@@time [^\n]*\n?", "") }
end

-- Runs argv (a pgvault command) and samples the peak RSS of that process
-- alone (VmHWM, every 20 ms), not of its children (pg_dump, pg_restore) as
-- /usr/bin/time would; stdout goes to a file (a pipe could fill up).
-- Returns {seconds, rss_kb, cpu, code, stdout}: cpu (user + system of the
-- command and its children) as /usr/bin/time counts it.
function bench.measure_self(argv, opts)
  opts = opts or {}
  local out, times = os.tmpname(), os.tmpname()
  local spec = { "/usr/bin/time", "-f", "%e %U %S", "-o", times, "sh", "-c", 'exec "$@" > "$0"', out }
  for _, a in ipairs(argv) do spec[#spec + 1] = a end
  spec.env, spec.cwd, spec.stdout, spec.stderr = opts.env, opts.cwd, "inherit", "inherit"
  local function read(path)
    local f = io.open(path, "r")
    local text = f and f:read("a") or ""
    if f then f:close() end
    return text
  end
  local t0 = proc.now()
  local h = proc.spawn(spec)
  local children, hwm, pid = "/proc/" .. h:pid() .. "/task/" .. h:pid() .. "/children", 0, nil
  while h:running() do
    pid = pid or read(children):match("(%d+)")
    if pid then hwm = math.max(hwm, tonumber(read("/proc/" .. pid .. "/status"):match("VmHWM:%s*(%d+)")) or 0) end
    proc.sleep(0.02)
  end
  local code = h:wait()
  local seconds = proc.now() - t0
  local wall, user, sys = read(times):match("([%d.]+) ([%d.]+) ([%d.]+)")
  local stdout = read(out)
  os.remove(out)
  os.remove(times)
  return { seconds = tonumber(wall) or seconds, rss_kb = hwm, cpu = (tonumber(user) or 0) + (tonumber(sys) or 0),
    code = code, stdout = stdout, stderr = "" }
end

-- Runs a shell pipeline (for peers like `pg_dump | zstd`), measured as a whole.
function bench.measure_sh(script, opts)
  return bench.measure({ "sh", "-c", script }, opts)
end

function bench.must(r, what)
  if r.code ~= 0 then error(what .. " failed (" .. tostring(r.code) .. "): " .. (r.stderr or "")) end
  return r
end

function bench.size(path)
  local st = fs.stat(path)
  return st and st.size or 0
end

-- Runs each function of `runs` `rounds` times, interleaved and rotating
-- (round k starts with run k), so that a burst of load from another job
-- on the machine falls on every contender alike; each run function keeps
-- its own best.
function bench.rounds(runs, rounds)
  for round = 0, rounds - 1 do
    for k = 1, #runs do runs[(k + round - 1) % #runs + 1]() end
  end
end

-- Keeps the best (fastest) of the measurements given under each name; the
-- best one's `all` lists every measurement's wall time, in order.
function bench.best()
  local best, all = {}, {}
  return best, function(name, r)
    all[name] = all[name] or {}
    table.insert(all[name], r.seconds)
    if not best[name] or r.seconds < best[name].seconds then best[name] = r end
    best[name].all = all[name]
    return r
  end
end

-- The machine's load averages (1, 5, 15 minutes), to print with each run:
-- the machine is shared, so absolute times are noisy.
function bench.load()
  local f = io.open("/proc/loadavg", "r")
  local line = f and f:read("l") or ""
  if f then f:close() end
  return line:match("^(%S+ %S+ %S+)") or "?"
end

-- Prints one comparison row and returns the ratio. CPU seconds follow the
-- wall times: on a machine shared with other sessions (the scheduler
-- shares CPU between sessions first) wall time mostly follows them.
-- With every round's times (bench.best), the rounds follow on a line of
-- their own with the median of the rounds' ratios (round k of pgvault
-- against round k of the peer, which ran next to it): on a busy machine a
-- best-of-three can pick one contender's lucky round.
function bench.row(name, ours, peer)
  local ratio = ours.seconds / math.max(peer.seconds, 1e-6)
  print(string.format("%-34s pgvault %7.2fs (cpu %.1fs) %6.1f MiB | peer %7.2fs (cpu %.1fs) %6.1f MiB | ratio %.2f",
    name, ours.seconds, ours.cpu or 0, ours.rss_kb / 1024, peer.seconds, peer.cpu or 0, peer.rss_kb / 1024, ratio))
  if ours.all and peer.all and #ours.all > 1 and #ours.all == #peer.all then
    local ratios, fmt = {}, function(list)
      local out = {}
      for i, v in ipairs(list) do out[i] = string.format("%.2f", v) end
      return table.concat(out, " ")
    end
    for i = 1, #ours.all do ratios[i] = ours.all[i] / math.max(peer.all[i], 1e-6) end
    table.sort(ratios)
    local n = #ratios
    local median = n % 2 == 1 and ratios[(n + 1) // 2] or (ratios[n // 2] + ratios[n // 2 + 1]) / 2
    print(string.format("  rounds: pgvault %s | peer %s | median of the rounds' ratios %.2f", fmt(ours.all),
      fmt(peer.all), median))
  end
  return ratio
end

return bench
