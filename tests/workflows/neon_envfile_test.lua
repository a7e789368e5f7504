-- covers: scripts/lib/envfile.lua
-- lib.envfile: DATABASE_URL rewritten in .env.production with every other
-- byte kept, atomically, mode kept; a missing key appended; a read-only file
-- a clear error.
local t = require "harness.testing"
local h = require "harness.env"
local fs = require "pgvault.fs"
local envfile = require "lib.envfile"

local NEW = "postgresql://app:s3cret@ep-x-pooler.us-east-2.aws.neon.tech/shop?sslmode=require&channel_binding=require"

local function rewrite(text, mode)
  local path = h.tmpdir() .. "/.env.production"
  h.write(path, text)
  fs.chmod(path, mode or 416)
  local r = envfile.set(path, "DATABASE_URL", NEW)
  return h.read(path), r, path
end

t.test("a bare value: other lines, order, comments and blank lines kept", function()
  local out, r = rewrite("# production\nSECRET_KEY=abc\n\nDATABASE_URL=postgresql://old@h/db\nREDIS_URL=redis://x\n")
  t.eq(out, "# production\nSECRET_KEY=abc\n\nDATABASE_URL=" .. NEW .. "\nREDIS_URL=redis://x\n")
  t.eq(r.count, 1)
  t.eq(r.old, "postgresql://old@h/db")
  t.eq(r.appended, false)
end)

t.test("quotes, export prefixes, spacing and trailing comments are kept", function()
  t.eq(rewrite('DATABASE_URL="postgresql://old"\n'), 'DATABASE_URL="' .. NEW .. '"\n')
  t.eq(rewrite("DATABASE_URL='postgresql://old' # the app\n"), "DATABASE_URL='" .. NEW .. "' # the app\n")
  t.eq(rewrite("export DATABASE_URL=postgresql://old\n"), "export DATABASE_URL=" .. NEW .. "\n")
  t.eq(rewrite('  export  DATABASE_URL = "x"   # note\n'), '  export  DATABASE_URL = "' .. NEW .. '"   # note\n')
  t.eq(rewrite("DATABASE_URL=postgresql://old # prod\n"), "DATABASE_URL=" .. NEW .. " # prod\n")
end)

t.test("similar keys and commented-out lines are left alone", function()
  local text = "#DATABASE_URL=old\nDATABASE_URL_RO=keep\nMY_DATABASE_URL=keep\nDATABASE_URL=old\n"
  t.eq(rewrite(text), "#DATABASE_URL=old\nDATABASE_URL_RO=keep\nMY_DATABASE_URL=keep\nDATABASE_URL=" .. NEW .. "\n")
end)

t.test("CRLF line endings and a missing final newline are kept", function()
  t.eq(rewrite("A=1\r\nDATABASE_URL=old\r\nB=2"), "A=1\r\nDATABASE_URL=" .. NEW .. "\r\nB=2")
  t.eq(rewrite("\239\187\191DATABASE_URL=old\r\n"), "\239\187\191DATABASE_URL=" .. NEW .. "\r\n", "with a BOM")
end)

t.test("a missing key is appended with the file's line endings", function()
  local out, r = rewrite("A=1\r\nB=2")
  t.eq(out, "A=1\r\nB=2\r\nDATABASE_URL=" .. NEW .. "\r\n")
  t.eq(r.appended, true)
  t.eq(rewrite(""), "DATABASE_URL=" .. NEW .. "\n", "an empty file")
end)

t.test("every assignment is rewritten; multi-line values are not mistaken for one", function()
  local text = 'DATABASE_URL=a\nKEY="""\nDATABASE_URL=inside\n"""\nPEM="-----BEGIN\nDATABASE_URL=in pem\n-----END"\n'
    .. "DATABASE_URL=b\n"
  local out, r = rewrite(text)
  t.eq(out, "DATABASE_URL=" .. NEW .. '\nKEY="""\nDATABASE_URL=inside\n"""\nPEM="-----BEGIN\nDATABASE_URL=in pem\n'
    .. '-----END"\nDATABASE_URL=' .. NEW .. "\n")
  t.eq(r.count, 2)
  t.eq(envfile.get(out, "DATABASE_URL"), NEW)
  t.eq(envfile.get(text, "PEM"), nil, "a multi-line value is not read as a one-line one")
end)

t.test("the file's mode is kept and no temporary file is left", function()
  local _, _, path = rewrite("DATABASE_URL=old\n", 384)
  t.eq(fs.stat(path).mode, 384)
  t.eq(#fs.listdir(path:match("^(.*)/")), 1, "only the env file in its directory")
  _, _, path = rewrite("DATABASE_URL=old\n", 420)
  t.eq(fs.stat(path).mode, 420)
end)

t.test("a symbolic link: the file it points to is rewritten, the link stays", function()
  local dir = h.tmpdir()
  h.write(dir .. "/real.env", "DATABASE_URL=old\n")
  h.run({ "ln", "-s", "real.env", dir .. "/.env.production" })
  envfile.set(dir .. "/.env.production", "DATABASE_URL", NEW)
  t.eq(h.read(dir .. "/real.env"), "DATABASE_URL=" .. NEW .. "\n")
  t.eq(fs.stat(dir .. "/.env.production", true).type, "link")
end)

t.test("a read-only file or a missing one is a clear error and nothing changes", function()
  local path = h.tmpdir() .. "/.env.production"
  h.write(path, "DATABASE_URL=old\n")
  fs.chmod(path, 292)
  local err = t.raises(function() envfile.set(path, "DATABASE_URL", NEW) end, "read%-only")
  t.eq(err.kind, "io")
  t.eq(h.read(path), "DATABASE_URL=old\n")
  t.raises(function() envfile.set(path .. ".missing", "DATABASE_URL", NEW) end, "No such file")
end)

t.test("an unchanged value does not touch the file", function()
  local path = h.tmpdir() .. "/.env"
  h.write(path, "DATABASE_URL=" .. NEW .. "\n")
  local before = fs.stat(path)
  local r = envfile.set(path, "DATABASE_URL", NEW)
  t.eq(r.changed, false)
  t.eq(fs.stat(path).mtime, before.mtime)
end)
