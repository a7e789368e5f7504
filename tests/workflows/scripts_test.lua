-- covers: scripts/scripts.lua
-- pgvault scripts --copy, and customising a workflow: README's worked
-- example (a copied backup.lua with an added step) runs as written. Old
-- bugs (regression tests): --copy NAME DIR with no DIR wrote a file named
-- DIR; --copy lib/backup DIR wrote DIR/backup.lua, which then shadowed the
-- workflow (pgvault --scripts DIR backup … exited 0 having done nothing).
local t = require "harness.testing"
local h = require "harness.env"
local fs = require "pgvault.fs"

t.test("--copy into a directory that does not exist yet creates it", function()
  local d = h.tmpdir() .. "/new/dir"
  local r = h.pgvault({ "scripts", "--copy", "backup", d })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, d .. "/backup.lua\n")
  t.eq(fs.stat(d).type, "dir")
  t.match(h.read(d .. "/backup.lua"), "^%-%- dump a database")
end)

t.test("a library module goes to DEST/lib/ and does not shadow the workflow", function()
  local d = h.tmpdir()
  local r = h.pgvault({ "scripts", "--copy", "lib/backup", d })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, d .. "/lib/backup.lua\n")
  t.ok(not fs.exists(d .. "/backup.lua"), "no DEST/backup.lua")
  local help = h.pgvault({ "--scripts", d, "backup", "--help" })
  t.eq(help.code, 0, help.stderr)
  t.match(help.stdout, "^usage: pgvault backup")
  -- the copy is the one the workflow loads
  h.write(d .. "/lib/backup.lua", h.read(d .. "/lib/backup.lua"):gsub('usage = "pgvault backup',
    'usage = "pgvault backup (my copy)', 1))
  help = h.pgvault({ "--scripts", d, "backup", "--help" })
  t.match(help.stdout, "^usage: pgvault backup %(my copy%)")
end)

t.test("several names, a file DEST, overwriting", function()
  local d = h.tmpdir()
  local r = h.pgvault({ "scripts", "--copy", "backup", "--copy", "restore", "--copy", "lib/naming", d })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, d .. "/backup.lua\n" .. d .. "/restore.lua\n" .. d .. "/lib/naming.lua\n")
  r = h.pgvault({ "scripts", "--copy", "verify", d .. "/mine.lua" })
  t.eq(r.code, 0, r.stderr)
  t.match(h.read(d .. "/mine.lua"), "^%-%- check that a backup is whole")
  -- several files, or a module, need a directory
  for _, args in ipairs({ { "--copy", "backup", "--copy", "restore", d .. "/mine.lua" },
    { "--copy", "lib/backup", d .. "/mine.lua" } }) do
    table.insert(args, 1, "scripts")
    r = h.pgvault(args)
    t.eq(r.code, 2, r.stderr)
    t.match(r.stderr, "is not a directory")
  end
  r = h.pgvault({ "scripts", "--copy", "backup", d })
  t.eq(r.code, 1)
  t.match(r.stderr, "backup%.lua already exists; use %-%-force")
  h.write(d .. "/backup.lua", "-- edited\n")
  r = h.pgvault({ "scripts", "--copy", "backup", "--force", d })
  t.eq(r.code, 0, r.stderr)
  t.match(h.read(d .. "/backup.lua"), "^%-%- dump a database")
  r = h.pgvault({ "scripts", "--copy", "lib/nope", d })
  t.eq(r.code, 2)
  t.match(r.stderr, "no built%-in workflow or library module 'lib/nope'")
  r = h.pgvault({ "scripts", d })
  t.eq(r.code, 2, "DEST without --copy")
end)

-- README "Customising a workflow": the lines after the marker, inserted after
-- `dest:commit(m)` in a copied backup.lua.
local function readme_example()
  local readme = fs.read_file(h.root .. "/README.md")
  local code = readme:match("<!%-%- example: backup%-checksum%-file %-%->\n```lua\n(.-)```")
  t.ok(code, "README has the worked example")
  return code
end

t.test("README's worked example: a copied backup.lua with an added step", function()
  local d = h.tmpdir()
  local r = h.pgvault({ "scripts", "--copy", "backup", d })
  t.eq(r.code, 0, r.stderr)
  local script = h.read(d .. "/backup.lua")
  local edited, n = script:gsub("\ndest:commit%(m%)\n", function(line) return line .. readme_example() end)
  t.eq(n, 1, "backup.lua has the line the README names")
  h.write(d .. "/backup.lua", edited)
  local out = h.tmpdir()
  local url = h.createdb("scripts_example_test")
  h.psql(url, "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g;")
  r = h.pgvault({ "--scripts", d, "backup", "--db", url, "--to", out })
  t.eq(r.code, 0, r.stderr)
  local path = r.stdout:match("([^\n]*)\n?$")
  local name = path:match("[^/]+$")
  t.eq(h.read(path .. ".sha256"):match("^%x+  (.-)\n$"), name)
  local check = h.run({ "sha256sum", "-c", name .. ".sha256" }, { cwd = out })
  t.eq(check.code, 0, check.stderr)
  t.eq(check.stdout, name .. ": OK\n")
  h.dropdb("scripts_example_test")
end)
