-- make demo: the whole job on a throwaway PostgreSQL 15 cluster and a local
-- S3-compatible bucket. Every step runs the real pgvault command a user would
-- type and shows its output; the demo fails (exit 1) if any step does not do
-- what it claims. Nothing outlives the run: services and files are removed.
package.path = "tests/?.lua;" .. package.path
local fs = require "pgvault.fs"
local pg = require "pgvault.pg"
local proc = require "pgvault.proc"
local s3 = require "pgvault.s3"
local services = require "harness.services"

local root = fs.getcwd()
local bin = root .. "/" .. (os.getenv("PGVAULT_BIN") or "bin/pgvault")
local base = fs.tmpdir("pgvault-demo")
local stop_services = function() end

local function cleanup()
  stop_services()
  pcall(fs.remove_tree, base)
end

local step_no = 0
local function step(title)
  step_no = step_no + 1
  io.write(string.format("\n\27[1m== %d. %s\27[0m\n", step_no, title))
end

local function indent(text)
  if text == "" then return end
  io.write((text:gsub("[^\n]+", "   %0")))
  if text:sub(-1) ~= "\n" then io.write("\n") end
end

-- Runs `pgvault ARGS...` with the demo's environment (the database password
-- and the S3 keys travel in the environment, never on the command line);
-- shows the command and what it printed. `expect` is the exit code wanted.
local env = {}
local function pgvault(args, expect)
  io.write("$ pgvault " .. table.concat(args, " ") .. "\n")
  local argv = { bin }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  argv.env, argv.cwd, argv.timeout = env, base, 600
  local r = proc.run(argv)
  indent(r.stdout)
  indent(r.stderr)
  if r.code ~= (expect or 0) then
    error(string.format("demo: 'pgvault %s' exited %s, expected %d", args[1], tostring(r.code), expect or 0), 0)
  end
  return r
end

local function last_line(text)
  return text:match("([^\n]+)\n?$")
end

local function check(cond, what)
  if not cond then error("demo: " .. what, 0) end
  io.write("   ok: " .. what .. "\n")
end

local function main()
  step("Start a throwaway PostgreSQL 15 cluster and an S3-compatible bucket")
  local desc, stop = services.start(base, root)
  stop_services = stop
  local p, bucket = desc.pg, desc.s3
  env = {
    PGPASSWORD = p.password,
    AWS_ACCESS_KEY_ID = bucket.access_key,
    AWS_SECRET_ACCESS_KEY = bucket.secret_key,
    AWS_REGION = bucket.region,
    AWS_ENDPOINT_URL = bucket.endpoint,
    AWS_PROFILE = false,
    AWS_CONFIG_FILE = base .. "/no-aws-config",
    AWS_SHARED_CREDENTIALS_FILE = base .. "/no-aws-credentials",
  }
  local url = string.format("postgresql://%s@127.0.0.1:%d/shop", p.user, p.port)
  local admin = pg.connect(string.format("host=%s port=%d user=postgres dbname=postgres", p.socket_dir, p.port))
  admin:exec(string.format("CREATE DATABASE shop OWNER %s TEMPLATE template0 ENCODING 'UTF8' " ..
    "LC_COLLATE 'en_US.UTF-8' LC_CTYPE 'en_US.UTF-8'", p.user))
  local client = s3.client { endpoint_url = bucket.endpoint, region = bucket.region,
    access_key_id = bucket.access_key, secret_access_key = bucket.secret_key }
  client:create_bucket("s3://demo-backups")
  io.write(string.format("   PostgreSQL on 127.0.0.1:%d, S3 at %s, bucket demo-backups\n", p.port, bucket.endpoint))

  step("Fill the database 'shop' with an application's data")
  local conn = pg.connect(string.format("host=127.0.0.1 port=%d user=%s dbname=shop password=%s",
    p.port, p.user, p.password))
  conn:exec([[
COMMENT ON DATABASE shop IS 'the web shop';
ALTER DATABASE shop SET statement_timeout = '30s';
CREATE SCHEMA sales;
CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL, email text UNIQUE, city text,
  created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE sales.orders (id bigserial PRIMARY KEY, customer_id bigint REFERENCES customers(id),
  total numeric(12,2) NOT NULL, note text, placed_at timestamptz NOT NULL);
CREATE INDEX ON customers (name);
CREATE VIEW sales.big_orders AS SELECT * FROM sales.orders WHERE total > 900;
INSERT INTO customers (name, email, city)
  SELECT (ARRAY['Zoë','Łukasz','Åsa','José','Renée','Ngozi','Hiroshi','Ana'])[1 + i % 8] || ' ' || md5(i::text),
         'c' || i || '@example.com', (ARRAY['Köln','São Paulo','Zürich','Kraków'])[1 + i % 4]
  FROM generate_series(1, 20000) i;
INSERT INTO sales.orders (customer_id, total, note, placed_at)
  SELECT 1 + (i * 7919) % 20000, round((random() * 1000)::numeric, 2),
         CASE WHEN i % 5 = 0 THEN NULL ELSE md5(random()::text) END,
         now() - (i || ' minutes')::interval
  FROM generate_series(1, 100000) i;
]])
  local function counts()
    local rows = conn:query("SELECT (SELECT count(*) FROM customers) AS c, (SELECT count(*) FROM sales.orders) AS o")
    return rows[1].c, rows[1].o
  end
  local c0, o0 = counts()
  io.write(string.format("   %d customers, %d orders\n", c0, o0))

  step("A local backup, checked byte by byte")
  local r = pgvault({ "backup", "--db", url, "--to", "db_backups", "--suffix", "local" })
  local local_backup = last_line(r.stdout)
  check(local_backup and local_backup:match("_local%.backup%.zst$"), "the archive is " .. tostring(local_backup))
  check(fs.exists(base .. "/" .. local_backup .. ".manifest.json"), "its manifest sits beside it")
  pgvault({ "verify", local_backup })
  pgvault({ "list", "--from", "db_backups" })

  step("Your own procedure: a copied backup.lua with one more step")
  pgvault({ "scripts", "--copy", "backup", "my-workflows" })
  local script = fs.read_file(base .. "/my-workflows/backup.lua")
  local added = '-- my step: NAME.sha256 beside the backup, for sha256sum -c\n'
    .. 'dest:write_beside(".sha256", r.stored.sha256 .. "  " .. dest.name .. "\\n")\n'
  local edited, n = script:gsub("\ndest:commit%(m%)\n", function(line) return line .. added end)
  check(n == 1, "the step goes after dest:commit(m) in my-workflows/backup.lua")
  fs.write_file(base .. "/my-workflows/backup.lua", edited)
  r = pgvault({ "--scripts", "my-workflows", "backup", "--db", url, "--to", "db_backups", "--suffix", "mine" })
  local mine = last_line(r.stdout):match("[^/]+$")
  local sum = proc.run({ "sha256sum", "-c", mine .. ".sha256", cwd = base .. "/db_backups" })
  check(sum.code == 0, "sha256sum -c " .. mine .. ".sha256 says " .. (sum.stdout:match("(%S+)%s*$") or "?"))

  step("An age key for the off-site copies")
  pgvault({ "keygen", "-o", "backup.key" })
  r = pgvault({ "keygen", "-y", "backup.key" })
  local recipient = last_line(r.stdout)
  check(recipient and recipient:match("^age1"), "the recipient is " .. tostring(recipient))

  step("The nightly job: an encrypted backup streamed to the bucket")
  r = pgvault({ "backup", "--db", url, "--to", "s3://demo-backups/prod/", "--suffix", "prod", "-r", recipient })
  local remote = last_line(r.stdout)
  check(remote and remote:match("^s3://demo%-backups/prod/.*_prod%.backup%.zst%.age$"), "uploaded " .. tostring(remote))
  pgvault({ "list", "--from", "s3://demo-backups/prod/", "-i", "backup.key" })
  pgvault({ "download", remote, "-o", "offsite.backup.zst.age" })
  pgvault({ "verify", "offsite.backup.zst.age", "-i", "backup.key", "--no-manifest" })

  step("Disaster: most orders are deleted by mistake")
  conn:exec("DELETE FROM sales.orders WHERE id % 10 <> 0")
  local _, o1 = counts()
  io.write(string.format("   %d orders left\n", o1))
  conn:close()

  step("Restore the newest off-site backup into a new database, then swap names")
  pgvault({ "restore", "s3://demo-backups/prod/latest", "--db", url, "-i", "backup.key" })
  conn = pg.connect(string.format("host=127.0.0.1 port=%d user=%s dbname=shop password=%s",
    p.port, p.user, p.password))
  local c2, o2 = counts()
  check(c2 == c0 and o2 == o0, string.format("shop has %d customers and %d orders again", c2, o2))
  local old = admin:query("SELECT datname FROM pg_database WHERE datname LIKE 'shop_old_%'")
  check(#old == 1, "the damaged copy is kept as " .. tostring(old[1] and old[1].datname))
  local props = admin:query([[SELECT shobj_description(d.oid, 'pg_database') AS comment,
    (SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting WHERE setdatabase = d.oid AND setrole = 0) AS conf
    FROM pg_database d WHERE datname = 'shop']])[1]
  check(props.comment == "the web shop" and props.conf == "statement_timeout=30s",
    "shop keeps its comment and its settings (" .. tostring(props.conf) .. ")")
  conn:close()

  step("The 'collation version mismatch' warning, found and fixed")
  admin:exec("UPDATE pg_database SET datcollversion = '2.28' WHERE datname = 'shop'")
  pgvault({ "collation-check", "--db", url }, 1)
  pgvault({ "collation-fix", "--db", url, "--to", "db_backups" })
  pgvault({ "collation-check", "--db", url })
  admin:close()

  -- The nightly job with a configuration file (the nightly team's part).
  dofile(root .. "/tools/demo_nightly.lua") { step = step, pgvault = pgvault, check = check, indent = indent,
    base = base, env = env, url = url, root = root, recipient = recipient }

  io.write("\n\27[1mThe demo ran every step.\27[0m Services and files are removed now.\n")
end

local ok, err = xpcall(main, function(e)
  if type(e) == "string" then return e end
  return tostring(e)
end)
cleanup()
if not ok then
  io.stderr:write("pgvault demo failed: " .. tostring(err) .. "\n")
  os.exit(1)
end
