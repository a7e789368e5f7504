-- A database worth backing up (several schemas, non-ASCII text, NULLs, a
-- large object, a sequence, a view, indexes, contrib extensions) and a
-- fingerprint of a database to compare a restored copy with its source.
local h = require "harness.env"

local fixture = {}

fixture.SQL = [[
CREATE EXTENSION pg_trgm;
CREATE EXTENSION hstore;
CREATE SCHEMA app;
CREATE SCHEMA "audit trail";
CREATE TABLE app.customers (id serial PRIMARY KEY, name text NOT NULL, city text, note text, tags hstore);
INSERT INTO app.customers (name, city, note, tags)
SELECT 'Zoë ' || g, (ARRAY['Zürich', 'Kraków', 'São Paulo', '東京'])[1 + g % 4],
       CASE WHEN g % 3 = 0 THEN NULL ELSE md5(g::text) END, hstore('k', g::text)
FROM generate_series(1, 500) g;
CREATE INDEX customers_name_trgm ON app.customers USING gin (name gin_trgm_ops);
CREATE SEQUENCE "audit trail".ticket_seq START 1000;
SELECT setval('"audit trail".ticket_seq', 4242);
CREATE TABLE "audit trail".events (
  id bigint DEFAULT nextval('"audit trail".ticket_seq') PRIMARY KEY,
  customer_id int REFERENCES app.customers (id), at timestamptz NOT NULL DEFAULT '2024-05-06 07:08:09+00',
  payload jsonb, blob oid);
INSERT INTO "audit trail".events (customer_id, payload)
SELECT 1 + g % 500, jsonb_build_object('n', g, 'txt', 'ünïcödé ✓ ' || g) FROM generate_series(1, 2000) g;
CREATE INDEX events_customer ON "audit trail".events (customer_id);
CREATE VIEW app.city_counts AS SELECT city, count(*) AS n FROM app.customers GROUP BY city;
CREATE TABLE public.empty_table (a int, b text);
UPDATE "audit trail".events SET blob = lo_from_bytea(0, convert_to('large object ✓ ' || repeat('x', 10000), 'UTF8'))
WHERE id = (SELECT min(id) FROM "audit trail".events);
]]

function fixture.create(name)
  local url = h.createdb(name)
  h.psql(url, fixture.SQL)
  return url
end

-- Everything that must survive a round trip, as one comparable table.
function fixture.fingerprint(url, opts)
  local fp = {}
  local tables = h.psql(url, [[SELECT quote_ident(table_schema) || '.' || quote_ident(table_name)
    FROM information_schema.tables WHERE table_type = 'BASE TABLE'
    AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1;]])
  fp.tables = {}
  for t in tables:gmatch("[^\n]+") do
    fp.tables[t] = h.psql(url, string.format(
      "SELECT count(*) || ' ' || md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) FROM %s x;", t))
  end
  fp.large_objects = h.psql(url, "SELECT count(*) || ' ' || "
    .. "coalesce(md5(string_agg(md5(lo_get(oid)), ',' ORDER BY oid)), '') FROM pg_largeobject_metadata;")
  fp.sequence = h.psql(url, [[SELECT last_value || ' ' || is_called FROM "audit trail".ticket_seq;]])
  fp.extensions = h.psql(url, "SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension;")
  fp.view = h.psql(url, "SELECT string_agg(city || '=' || n, ',' ORDER BY city) FROM app.city_counts;")
  fp.indexes = h.psql(url, [[SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes
    WHERE schemaname NOT IN ('pg_catalog');]])
  if not (opts and opts.no_schema) then
    -- The schema as pg_dump prints it, without its comment lines.
    local pg = h.pg()
    local clean, pw = url:gsub("^(%w+://[^:/@]*):[^@]*@", "%1@"), url:match("^%w+://[^:/@]*:([^@]*)@")
    local r = h.run({ pg.bindir .. "/pg_dump", "-s", "-d", clean }, { env = { PGPASSWORD = pw } })
    assert(r.code == 0, "pg_dump -s failed: " .. r.stderr)
    -- (and the random key of the \restrict lines of recent minor releases)
    fp.schema = r.stdout:gsub("%-%-[^\n]*\n", ""):gsub("\\u?n?restrict [^\n]*\n", "")
  end
  return fp
end

-- `pgvault backup --db url --to to ARGS…` (opts: env, timeout), which must
-- succeed; returns the archive's path (stdout's last line).
function fixture.backup(url, to, args, opts)
  local argv = { "backup", "--db", url, "--to", to }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local r = h.pgvault(argv, opts)
  assert(r.code == 0, r.stderr)
  return r.stdout:match("([^\n]+)\n$")
end

-- The last part of a path or URL, and a Lua pattern matching `s` literally.
function fixture.base(path) return path:match("([^/]+)$") end
function fixture.literal(s) return (s:gsub("%p", "%%%0")) end

return fixture
