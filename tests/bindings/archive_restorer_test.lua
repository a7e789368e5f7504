-- covers: bindings/archive/ bindings/pg/load.c scripts/lib/streamed_restore.lua
-- archive.restorer and lib.streamed_restore: restore --jobs N while the
-- archive arrives (issue 17). The result must be what pg_restore -j N
-- gives: the schema (pg_dump -s), every table's rows and contents, the
-- large objects and the sequences compared, on a database with foreign
-- keys between tables, inheritance, partitions, large objects, views, a
-- materialized view, triggers, comments, grants and awkward names; from a
-- pgvault backup (.zst, written through a pipe: no data offsets), from a
-- pg_dump -Fc file (gzip blocks), and an --inserts archive. Damage and a
-- failing session stop it with the cause.
local t = require "harness.testing"
local h = require "harness.env"
local fx = require "fixtures.pgdmp"
local stream = require "pgvault.stream"
local archive = require "pgvault.archive"
local dump = require "pgvault.dump"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local streamed = require "lib.streamed_restore"

local dir = h.tmpdir()
local pg = h.pg()
local src_url

local function source_db()
  if src_url then return src_url end
  src_url = h.createdb("restorer_src")
  h.psql(src_url, [==[
CREATE SCHEMA app;
CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE app.customers (id int PRIMARY KEY, name text NOT NULL, mood app.mood, born date);
CREATE TABLE app.orders (id bigserial PRIMARY KEY, customer int NOT NULL REFERENCES app.customers (id),
  total numeric(12,2) CHECK (total >= 0), note text, at timestamptz DEFAULT '2024-01-01');
CREATE INDEX orders_customer ON app.orders (customer);
CREATE TABLE app.items (order_id bigint REFERENCES app.orders (id) ON DELETE CASCADE, line int, what text,
  PRIMARY KEY (order_id, line));
INSERT INTO app.customers SELECT g, 'c' || g, (ARRAY['sad','ok','happy'])[1 + g % 3]::app.mood,
  date '1980-01-01' + g FROM generate_series(1, 2000) g;
INSERT INTO app.orders (customer, total, note) SELECT 1 + g % 2000, g * 1.5,
  CASE WHEN g % 7 = 0 THEN E'tab\there, new\nline, back\\slash, \\N not null' END FROM generate_series(1, 20000) g;
INSERT INTO app.items SELECT o.id, l, 'item ' || l FROM app.orders o, generate_series(1, 2) l WHERE o.id % 3 = 0;
CREATE TABLE app.animals (id int PRIMARY KEY, name text);
CREATE TABLE app.dogs (barks boolean) INHERITS (app.animals);
INSERT INTO app.animals VALUES (1, 'generic');
INSERT INTO app.dogs VALUES (2, 'rex', true), (3, 'fido', false);
CREATE TABLE app.events (k int, at date, v text) PARTITION BY RANGE (at);
CREATE TABLE app.events_2023 PARTITION OF app.events FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE app.events_2024 PARTITION OF app.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE app.events_other PARTITION OF app.events DEFAULT;
INSERT INTO app.events SELECT g, date '2023-01-01' + (g % 900), 'e' || g FROM generate_series(1, 5000) g;
CREATE INDEX events_k ON app.events (k);
CREATE TABLE "Weird ""Name""" ("select" int, "two words" text, g int GENERATED ALWAYS AS ("select" * 2) STORED);
INSERT INTO "Weird ""Name""" ("select", "two words") VALUES (1, 'a;b'), (2, 'ünïcödé'), (3, E'back\\'';x');
CREATE TABLE app.empty (x int);
CREATE SEQUENCE app.counter START 100;
SELECT nextval('app.counter'), nextval('app.counter');
CREATE VIEW app.big_orders AS SELECT * FROM app.orders WHERE total > 1000;
CREATE MATERIALIZED VIEW app.per_customer AS SELECT customer, count(*) AS n FROM app.orders GROUP BY customer;
CREATE INDEX per_customer_n ON app.per_customer (n);
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.at := now(); RETURN NEW; END $$;
CREATE TRIGGER orders_touch BEFORE UPDATE ON app.orders FOR EACH ROW EXECUTE FUNCTION app.touch();
COMMENT ON TABLE app.orders IS 'the orders';
GRANT SELECT ON app.customers TO PUBLIC;
SELECT lo_from_bytea(0, 'small'), lo_from_bytea(0, ''),
  lo_from_bytea(0, decode(repeat('00ff7f80', 50000), 'hex'));
ALTER TABLE app.orders ADD CONSTRAINT orders_note_len CHECK (length(note) < 1000) NOT VALID;
]==])
  return src_url
end

-- What a database holds, for comparison: its schema as pg_dump -s prints
-- it, and a digest of every table's rows, the large objects and sequences.
local function contents(db)
  local url = pg.url(db)
  local r = h.run({ pg.bindir .. "/pg_dump", "-s", "-d", url:gsub(":[^:@/]*@", "@"), "--no-owner" },
    { env = { PGPASSWORD = pg.password } })
  t.eq(r.code, 0, "pg_dump -s " .. db .. ": " .. r.stderr)
  -- pg_dump 15.14+ guards its script with \restrict and a random key
  local schema = r.stdout:gsub("\n\\u?n?restrict [^\n]*", "\n")
  local digests = h.psql(url, [[
SELECT string_agg(format('%s %s', c.oid::regclass, (xpath('/row/d/text()',
  query_to_xml(format('SELECT count(*) || '':'' || coalesce(md5(string_agg(t::text, '','' ORDER BY t::text)), '''') '
    || 'AS d FROM ONLY %s t',
  c.oid::regclass), false, true, '')))[1]::text), E'\n' ORDER BY c.oid::regclass::text)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema');
SELECT string_agg(format('lo %s', md5(lo_get(oid))), E'\n' ORDER BY md5(lo_get(oid))) FROM pg_largeobject_metadata;
SELECT last_value FROM app.counter;
]])
  return schema, digests
end

-- Shows how two texts differ (diff -u), for a failing comparison.
local function diff(a, b)
  fs.write_file(dir .. "/a.txt", a)
  fs.write_file(dir .. "/b.txt", b)
  return h.run({ "diff", "-u", dir .. "/a.txt", dir .. "/b.txt" }).stdout:sub(1, 3000)
end

local function fresh(db)
  h.createdb(db)
  return db
end

-- The engine as lib.restore runs it: the sink in a pipeline, then finish.
local last_tmp
local function streamed_restore(stages, db, jobs, spill, split)
  local job = { jobs = jobs or 2, spill = spill, split = split }
  local dbh = { conninfo = dump.conninfo(pg.url(db), { password = true }) }
  local all = {}
  for _, s in ipairs(stages) do all[#all + 1] = s end
  all[#all + 1] = streamed.sink(job, dbh)
  last_tmp = dbh.streamed.tmp
  local ok, r = pcall(stream.run, all)
  if ok then ok, r = pcall(function() streamed.finish(job, dbh, r) return r end) end
  streamed.cleanup(dbh)
  if not ok then error(r, 0) end
  return r
end

local function pg_restore_j(file, db)
  local r = h.run({ pg.bindir .. "/pg_restore", "-j", "2", "--exit-on-error", "-d",
    pg.url(db):gsub(":[^:@/]*@", "@"), file }, { env = { PGPASSWORD = pg.password } })
  t.eq(r.code, 0, "pg_restore -j 2: " .. r.stderr)
end

local expected
local function same_as_pg_restore(db, what)
  if not expected then
    local file = fx.pg_dump(source_db(), dir .. "/peer.dump", {})
    pg_restore_j(file, fresh("restorer_peer"))
    expected = { contents("restorer_peer") }
  end
  local schema, data = contents(db)
  t.ok(schema == expected[1], what .. ": the schema as pg_dump -s prints it\n" .. diff(expected[1], schema))
  t.eq(data, expected[2], what .. ": every table's rows, the large objects, the sequence")
  t.match(data, "app%.orders 20000:", what)
end

t.test("a pgvault backup (.zst through a pipe) restores as pg_restore -j 2 restores it", function()
  source_db()
  local out = h.pgvault({ "-q", "backup", "--db", src_url, "--to", dir .. "/b" })
  t.eq(out.code, 0, out.stderr)
  local zst = out.stdout:match("([^\n]+)\n$")
  local r = streamed_restore({ stream.file_reader(zst), stream.unzstd() }, fresh("restorer_a"))
  t.eq(r.archive.complete, true)
  t.eq(r.archive.restore.workers, 2)
  t.eq(r.archive.restore.jobs, 11, "a job per table's data block and one for the large objects' block")
  same_as_pg_restore("restorer_a", ".zst")
end)

t.test("pg_dump -Fc (gzip blocks, offsets), a small spill, four sessions, big tables in 64 KiB pieces", function()
  local file = fx.pg_dump(source_db(), dir .. "/fc.dump", {})
  local r = streamed_restore({ stream.file_reader(file) }, fresh("restorer_b"), 4, 2 << 20, 65536)
  t.ok(r.archive.restore.spill_peak <= 2 << 20, "the spill stayed within its budget")
  t.ok(r.archive.restore.jobs > 20, "the orders, items and events tables in pieces: " .. r.archive.restore.jobs)
  same_as_pg_restore("restorer_b", "-Fc, 4 sessions, 2 MiB spill, 64 KiB pieces")
end)

t.test("an --inserts archive: its INSERT statements are the data", function()
  local file = fx.pg_dump(source_db(), dir .. "/ins.dump", { "--inserts", "-Z0" })
  streamed_restore({ stream.file_reader(file) }, fresh("restorer_c"))
  same_as_pg_restore("restorer_c", "--inserts")
end)

t.test("an --inserts archive written with standard_conforming_strings off: the sessions take its setting", function()
  local url = source_db() .. "?options=-c%20standard_conforming_strings%3Doff"
  local file = fx.pg_dump(url, dir .. "/ins_off.dump", { "--inserts", "-Z0" })
  t.match(fs.read_file(file), "SET standard_conforming_strings = 'off';", "the archive says so")
  streamed_restore({ stream.file_reader(file) }, fresh("restorer_h"))
  same_as_pg_restore("restorer_h", "--inserts, standard_conforming_strings off")
end)

t.test("a cut archive fails with the cause, and nothing is left in the temporary directory", function()
  local data = fs.read_file(fx.pg_dump(source_db(), dir .. "/cut.dump", { "-Z0" }))
  local ok, e = pcall(streamed_restore, { stream.string(data:sub(1, #data * 2 // 3)) }, fresh("restorer_d"))
  t.eq(ok, false)
  t.eq(e.kind, "archive")
  t.match(tostring(e), "archive truncated")
  t.eq(fs.exists(last_tmp), false, "the TOC file's directory is gone")
end)

t.test("a session's failure names the table and stops the stream", function()
  local data = fs.read_file(fx.pg_dump(source_db(), dir .. "/fail.dump", { "-Z0" }))
  -- the archive stays whole; one customer's id is no longer an integer
  local at = data:find("17\tc17\thappy\t", 1, true)
  t.ok(at, "found customer 17's row")
  local bad = data:sub(1, at - 1) .. "x7" .. data:sub(at + 2)
  local ok, e = pcall(streamed_restore, { stream.string(bad) }, fresh("restorer_e"), 2, 2 << 20)
  t.eq(ok, false)
  -- one line: the job (entry and table), the server's message and
  -- SQLSTATE, and its context (the table and the line of the COPY)
  t.eq(e.kind, "pg")
  t.eq(e.sqlstate, "22P02")
  t.match(e.message, "^loading entry %d+ %(TABLE DATA app%.customers%): invalid input syntax for type "
    .. "integer: \"x7\" %(SQLSTATE 22P02%); context: COPY customers, line 17, column id: \"x7\"$")
  t.eq(e.message:find("\n"), nil, "one line")
end)

-- The restore's archive through a FIFO: `first`, then (once a session of
-- `db` is in its COPY into app.orders) this process's children and the
-- answer to `sql` go to `out`, then `rest`. Returns the writer.
local function feed_fifo(name, data, db, sql)
  local fifo, out = dir .. "/" .. name .. ".fifo", dir .. "/" .. name .. ".out"
  local cut = data:find("10000\t1\t15000.00\t", 1, true)
  t.ok(cut, "found order 10000's row")
  fs.write_file(dir .. "/" .. name .. ".1", data:sub(1, cut))
  fs.write_file(dir .. "/" .. name .. ".2", data:sub(cut + 1))
  os.remove(fifo)
  t.eq(h.run({ "mkfifo", fifo }).code, 0)
  local script = [[
q() { "$PSQL" -XAt -d "$ADMIN" -c "$1"; }
{ cat "$NAME.1"
  i=0
  while [ -z "$(q "SELECT pid FROM pg_stat_activity WHERE datname = '$DB' AND query LIKE 'COPY app.orders %'")" ] &&
    [ $i -lt 3000 ]; do sleep 0.02; i=$((i + 1)); done
  { ps -o comm= --ppid "$WATCH"; q "$SQL"; } > "$OUT" 2>&1
  cat "$NAME.2"
} > "$FIFO"
]]
  local w = proc.spawn { "sh", "-c", script, stdout = "inherit", env = { PSQL = pg.bindir .. "/psql",
    ADMIN = pg.admin_url("postgres"), DB = db, SQL = sql, WATCH = tostring(proc.getpid()),
    NAME = dir .. "/" .. name, OUT = out, FIFO = fifo } }
  return fifo, out, w
end

t.test("the sessions are libpq connections in this process: no psql child while the data loads", function()
  local data = fs.read_file(fx.pg_dump(source_db(), dir .. "/inproc.dump", { "-Z0" }))
  local fifo, out, w = feed_fifo("inproc", data, "restorer_f", "SELECT application_name FROM pg_stat_activity "
    .. "WHERE datname = 'restorer_f' AND backend_type = 'client backend' ORDER BY 1")
  streamed_restore({ stream.file_reader(fifo) }, fresh("restorer_f"), 2, nil, 0)
  w:wait()
  local seen = fs.read_file(out)
  for line in seen:gmatch("[^\n]+") do t.ok(line ~= "psql", "a psql child during the data phase:\n" .. seen) end
  t.match(seen, "\npgvault\npgvault\n$", "the two sessions, named by libpq's fallback application name")
  same_as_pg_restore("restorer_f", "through a FIFO, in one piece per table")
end)

t.test("a session's backend terminated in the middle of a COPY: one line, a non-zero exit", function()
  local data = fs.read_file(fx.pg_dump(source_db(), dir .. "/kill.dump", { "-Z0" }))
  fresh("restorer_g")
  local fifo, out, w = feed_fifo("kill", data, "restorer_g", "SELECT pg_terminate_backend(pid) FROM "
    .. "pg_stat_activity WHERE datname = 'restorer_g' AND query LIKE 'COPY app.orders %'")
  local script = dir .. "/kill.lua"
  fs.write_file(script, string.format([[
local stream = require "pgvault.stream"
local dump = require "pgvault.dump"
local streamed = require "lib.streamed_restore"
local job = { jobs = 2, split = 0 }
local db = { conninfo = dump.conninfo(%q, { password = true }) }
local ok, err = pcall(function()
  local r = stream.run { stream.file_reader(%q), streamed.sink(job, db) }
  streamed.finish(job, db, r)
end)
streamed.cleanup(db)
if not ok then error(err, 0) end
]], pg.url("restorer_g"), fifo))
  local r = h.pgvault({ "run", script })
  w:wait()
  t.match(fs.read_file(out), "\nt\n$", "the backend was terminated")
  t.ok(r.code ~= 0, "a non-zero exit")
  local lines = {}
  for line in r.stderr:gmatch("[^\n]+") do lines[#lines + 1] = line end
  t.eq(#lines, 1, "one line:\n" .. r.stderr)
  t.match(r.stderr, "loading entry %d+ %(TABLE DATA app%.orders%): ")
  -- the server's own word when libpq read it before the reset, else libpq's
  t.ok(r.stderr:find("terminating connection due to administrator command", 1, true)
    or r.stderr:find("lost the connection to [^ ]+@127%.0%.0%.1:%d+/restorer_g: server closed the connection"),
    "the cause: " .. r.stderr)
end)

-- Every fuzz input through the restorer as through archive.read: the same
-- verdict (no database: a pre-data that does nothing, sessions that
-- discard), with small pieces and spill so every path runs.
t.test("the archive fuzz corpus replays through the restorer", function()
  local cdir = "tests/fuzz/archive_corpus"
  local names = fs.listdir(cdir)
  t.ok(#names >= 10, "corpus present")
  for i, name in ipairs(names) do
    local data = fs.read_file(cdir .. "/" .. name)
    local ok = pcall(archive.read, cdir .. "/" .. name)
    local toc = dir .. "/replay" .. i .. ".toc"
    local ok2, e = pcall(stream.run, { stream.string(data), archive.restorer { toc_file = toc,
      predata = stream.string(""), workers = { "discard", "discard" }, spill = 2 << 20,
      split = 65536 } })
    t.eq(ok2, ok, name .. ": the restorer agrees with archive.read")
    if not ok2 then t.eq(e.kind, "archive", name .. ": " .. tostring(e)) end
    os.remove(toc)
  end
end)

t.test("misuse", function()
  t.raises(function() archive.restorer {} end, "toc_file")
  t.raises(function() archive.restorer { toc_file = dir .. "/x", predata = stream.discard(), workers = {} } end,
    "must be a source")
end)

t.teardown(function()
  for _, db in ipairs({ "restorer_src", "restorer_peer", "restorer_a", "restorer_b", "restorer_c", "restorer_d",
    "restorer_e", "restorer_f", "restorer_g", "restorer_h" }) do
    h.dropdb(db)
  end
end)
