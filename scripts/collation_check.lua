-- find collation version mismatches and the indexes they put at risk
local cli = require "lib.cli"
local collation = require "lib.collation"
local json = require "lib.json"
local pgvault = require "pgvault"

local o = cli.parse(arg, {
  usage = "pgvault collation-check [--db URL] [--all-databases] [--deep [--create-amcheck]] [--json]",
  summary = "Compares each database's recorded collation version (pg_database.datcollversion) and each\n"
    .. "collation's (pg_collation.collversion) with the version the operating system's library provides\n"
    .. "now, and lists the indexes that depend on a mismatched one: after a glibc or ICU upgrade their\n"
    .. "order may be wrong, so lookups miss rows and unique indexes let duplicates in. Read-only.\n"
    .. "Exits 1 when something needs 'pgvault collation-fix'.",
  options = {
    { "db", "d", "URL", "database URL or conninfo (default: libpq's environment, PGHOST, PGDATABASE ...)" },
    { "all-databases", "a", false, "check every database of that server that accepts connections" },
    { "deep", nil, false, "also run amcheck's bt_index_check on every B-tree index that uses a versioned "
      .. "collation (needs the amcheck extension)" },
    { "create-amcheck", nil, false, "with --deep: create the amcheck extension (in schema public) where it is "
      .. "missing, the one change collation-check then makes (CREATE EXTENSION is for superusers)" },
    { "json", nil, false, "print the report as JSON on stdout" },
  },
  epilog = "Needs only a normal connection; --deep needs amcheck and EXECUTE on bt_index_check.",
})
if o.create_amcheck and not o.deep then
  pgvault.raise("usage", "--create-amcheck goes with --deep (see 'pgvault collation-check --help')")
end

local reports, failures = {}, {}
for _, target in ipairs(collation.targets(o.db or "", o.all_databases)) do
  local ok, err = pcall(function()
    local conn <close> = target.conn or collation.connect(target.url)
    local report = collation.check(conn, { deep = o.deep, create_amcheck = o.create_amcheck })
    reports[#reports + 1] = report
    if not o.json then
      for _, line in ipairs(collation.describe(report)) do print(line) end
    end
  end)
  if not ok then
    if not pgvault.is_error(err) or err.kind == "interrupted" then error(err, 0) end
    failures[#failures + 1] = { database = target.name, error = tostring(err) }
    if not o.json then print(string.format("database %s: cannot check: %s", target.name, tostring(err))) end
  end
end

local need, corrupt = {}, {}
for _, r in ipairs(reports) do
  if r.needs_fix then need[#need + 1] = r.database.name end
  if r.corrupt then corrupt[#corrupt + 1] = r.database.name end
end

if o.json then
  local out = { ok = #need == 0 and #corrupt == 0 and #failures == 0, databases = json.array(),
    errors = json.array(failures) }
  for _, r in ipairs(reports) do out.databases[#out.databases + 1] = collation.plain(r) end
  print(json.encode(out))
elseif #need == 0 and #corrupt == 0 and #failures == 0 then
  print("no collation version mismatch" .. (o.deep and " and no corrupt index" or ""))
end

if #failures == 1 and #reports == 0 then
  pgvault.raise("pg", failures[1].error)
elseif #need > 0 or #corrupt > 0 or #failures > 0 then
  local parts = {}
  if #need > 0 then
    parts[#parts + 1] = "collation version mismatch in " .. table.concat(need, ", ")
  end
  if #corrupt > 0 then parts[#parts + 1] = "corrupt indexes in " .. table.concat(corrupt, ", ") end
  if #failures > 0 then parts[#parts + 1] = #failures .. " database(s) could not be checked" end
  pgvault.raise("verify", table.concat(parts, "; ") .. ": run 'pgvault collation-fix"
    .. (o.all_databases and " --all-databases" or "") .. "' to rebuild the indexes and refresh the versions")
end
