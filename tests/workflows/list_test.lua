-- covers: scripts/list.lua scripts/lib/catalog.lua
-- pgvault list: backups newest first with time, environment, size and
-- manifest status (ok, missing, invalid, size mismatch); --json; other
-- files ignored; a missing directory is a clear error. Plus one real backup.
local t = require "harness.testing"
local h = require "harness.env"
local cjson = require "cjson"

local function put(dir, name, data, manifest)
  h.write(dir .. "/" .. name, data)
  if manifest then h.write(dir .. "/" .. name .. ".manifest.json", manifest) end
end

local function fake_dir()
  local d = h.tmpdir()
  put(d, "20240101000000_prod.backup.zst", "aaaa", cjson.encode { format = 1, database = "app",
    stored = { bytes = 4 } })
  put(d, "20250601120000_local.backup", "bbbbbb", cjson.encode { format = 1, database = "app",
    stored = { bytes = 6 } })
  put(d, "20250301000000_staging.backup.zst", "cc") -- no manifest: never completed
  put(d, "20250401000000_prod.backup.zst", "dd", "{not json")
  put(d, "20250501000000_prod.backup.zst.age", "eeeee", cjson.encode { format = 1, stored = { bytes = 99 } })
  put(d, "20250701000000_prod.backup.zst.partial", "in progress")
  put(d, "notes.txt", "unrelated")
  put(d, "20250801000000_x.backup.gz", "not ours")
  return d
end

t.test("newest first, with status, environment and size", function()
  local d = fake_dir()
  local r = h.pgvault({ "list", "--from", d })
  t.eq(r.code, 0, r.stderr)
  local lines = {}
  for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
  t.eq(#lines, 6, "a header and five backups: " .. r.stdout)
  t.match(lines[1], "^TIME %(UTC%)%s+ENV%s+SIZE%s+MANIFEST")
  t.match(lines[2], "^2025%-06%-01 12:00:00%s+local%s+6 B%s+ok%s+app%s+.*20250601120000_local%.backup$")
  t.match(lines[3], "^2025%-05%-01 00:00:00%s+prod%s+5 B%s+size mismatch")
  t.match(lines[4], "^2025%-04%-01 00:00:00%s+prod%s+2 B%s+invalid")
  t.match(lines[5], "^2025%-03%-01 00:00:00%s+staging%s+2 B%s+missing")
  t.match(lines[6], "^2024%-01%-01 00:00:00%s+prod%s+4 B%s+ok")
  t.no_match(r.stdout, "partial")
  t.no_match(r.stdout, "notes")
end)

t.test("--json for machines", function()
  local d = fake_dir()
  local r = h.pgvault({ "list", "--from", d, "--json" })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, '"size":6[,}]', "sizes are integers")
  t.no_match(r.stdout, '"size":%d+%.0', "never 6.0")
  local rows = cjson.decode(r.stdout)
  t.eq(#rows, 5)
  t.eq(rows[1].name, "20250601120000_local.backup")
  t.eq(rows[1].time, "2025-06-01T12:00:00Z")
  t.eq(rows[1].environment, "local")
  t.eq(rows[1].size, 6)
  t.eq(rows[1].manifest, "ok")
  t.eq(rows[1].compressed, false)
  t.eq(rows[2].encrypted, true)
  t.eq(rows[4].manifest, "missing")
  local empty = h.pgvault({ "list", "--from", h.tmpdir(), "--json" })
  t.eq(empty.stdout, "[]\n")
end)

t.test("an empty or missing directory", function()
  local r = h.pgvault({ "list", "--from", h.tmpdir() })
  t.eq(r.code, 0)
  t.match(r.stdout, "^no backups in ")
  r = h.pgvault({ "list", "--from", "/nonexistent/backups" })
  t.eq(r.code, 1)
  t.eq(r.stderr, "pgvault: list: cannot list /nonexistent/backups: no such directory: name the directory (or "
    .. "s3://BUCKET/PREFIX/) that 'backup --to' wrote to (default db_backups)\n")
  -- regression test: a new user's first 'pgvault list' (no db_backups here) did not say what to do
  r = h.pgvault({ "list" }, { cwd = h.tmpdir() })
  t.eq(r.code, 1)
  t.match(r.stderr, "^pgvault: list: cannot list db_backups: no such directory: name the directory")
end)

t.test("a real backup is listed as ok with its database", function()
  local url = h.createdb("list_workflow_test")
  h.psql(url, "CREATE TABLE a (b int); INSERT INTO a VALUES (1);")
  local d = h.tmpdir()
  local b = h.pgvault({ "-q", "backup", "--db", url, "--to", d, "--suffix", "ci" })
  t.eq(b.code, 0, b.stderr)
  local rows = cjson.decode(h.pgvault({ "list", "--from", d, "--json" }).stdout)
  t.eq(#rows, 1)
  t.eq(rows[1].path, b.stdout:match("([^\n]+)\n$"))
  t.eq(rows[1].manifest, "ok")
  t.eq(rows[1].database, "list_workflow_test")
  t.eq(rows[1].environment, "ci")
  t.match(rows[1].sha256, "^%x+$")
  h.dropdb("list_workflow_test")
end)

t.test("several databases in one place: the DATABASE column and --database NAME", function()
  local d = h.tmpdir()
  put(d, "20250101000000_local.backup", "a", cjson.encode { format = 1, database = "shop", stored = { bytes = 1 } })
  put(d, "20250101000000-2_local.backup", "bb", cjson.encode { format = 1, database = "billing",
    stored = { bytes = 2 } })
  put(d, "20250102000000_local.backup", "ccc", cjson.encode { format = 1, database = "shop", stored = { bytes = 3 } })
  local r = h.pgvault({ "list", "--from", d })
  t.eq(r.code, 0, r.stderr)
  t.match(r.stdout, "^TIME %(UTC%)%s+ENV%s+SIZE%s+MANIFEST%s+DATABASE%s+FILE\n")
  t.match(r.stdout, "\n2025%-01%-02 00:00:00%s+local%s+3 B%s+ok%s+shop%s+[^\n]*20250102000000_local%.backup\n"
    .. "2025%-01%-01 00:00:00%s+local%s+2 B%s+ok%s+billing%s+[^\n]*20250101000000%-2_local%.backup\n"
    .. "2025%-01%-01 00:00:00%s+local%s+1 B%s+ok%s+shop%s+", "newest first, the second of one second before the first")
  r = h.pgvault({ "list", "--from", d, "--database", "shop", "--json" })
  t.eq(r.code, 0, r.stderr)
  local rows = cjson.decode(r.stdout)
  t.eq(#rows, 2)
  t.eq({ rows[1].database, rows[2].database }, { "shop", "shop" })
  r = h.pgvault({ "list", "--from", d, "--database", "nope" })
  t.eq(r.stdout, "no backups of database nope in " .. d .. "\n")
  t.eq(h.pgvault({ "list", "--from", d, "--database", "nope", "--json" }).stdout, "[]\n")
end)

t.test("--database in a bucket", function()
  local s3 = require "pgvault.s3"
  local c = h.s3()
  local opts = require("harness.s3").direct()
  require("harness.s3").make_bucket("list-databases")
  for i, db in ipairs({ "shop", "billing", "shop" }) do
    local key = string.format("s3://list-databases/p/2025010%d000000_local.backup", i)
    s3.put(key, "x", opts)
    s3.put(key .. ".manifest.json", cjson.encode { format = 1, database = db, stored = { bytes = 1 } }, opts)
  end
  local r = h.pgvault({ "list", "--from", "s3://list-databases/p/", "--database", "shop", "--json" },
    { env = c.env })
  t.eq(r.code, 0, r.stderr)
  local rows = cjson.decode(r.stdout)
  t.eq(#rows, 2)
  t.eq(rows[1].name, "20250103000000_local.backup")
  t.eq(rows[2].name, "20250101000000_local.backup")
  r = h.pgvault({ "list", "--from", "s3://list-databases/p/" }, { env = c.env })
  t.match(r.stdout, "ok%s+billing%s+s3://list%-databases/p/20250102000000_local%.backup")
end)
