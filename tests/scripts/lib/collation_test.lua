-- covers: scripts/lib/collation.lua
-- lib.collation without a server: recognising the collation-version
-- warning in a connection's notices and in a client program's warnings,
-- and saying each warning once (backup used to say this one twice, the
-- server's sentences run together).
local t = require "harness.testing"
local h = require "harness.env"
local collation = require "lib.collation"

local NOTICE = { severity = "WARNING", sqlstate = "01000",
  message = 'database "shop" has a collation version mismatch',
  detail = "The database was created using collation version 2.31, but the operating system provides version 2.36.",
  hint = "Rebuild all objects in this database that use the default collation and run ALTER DATABASE shop "
    .. "REFRESH COLLATION VERSION, or build PostgreSQL with the right library version.",
  text = 'database "shop" has a collation version mismatch. The database was created using collation version '
    .. "2.31, but the operating system provides version 2.36. Hint: Rebuild all objects in this database that use "
    .. "the default collation and run ALTER DATABASE shop REFRESH COLLATION VERSION, or build PostgreSQL with the "
    .. "right library version." }

t.test("is_mismatch: the database's and a collation's warning, as a notice or a client's text", function()
  t.eq(collation.is_mismatch(NOTICE), true)
  t.eq(collation.is_mismatch(NOTICE.text), true, "pg_dump's warning, as its stage reports it")
  t.eq(collation.is_mismatch('collation "public.de_x" has version mismatch. The collation in the database was '
    .. "created using version 153.14, but the operating system provides version 153.112."), true)
  t.eq(collation.is_mismatch({ message = 'collation "x" has version mismatch' }), true)
  for _, other in ipairs({ 'relation "t" does not exist', "my database \"x\" has a collation version mismatch", "",
    {}, 42 }) do
    t.eq(collation.is_mismatch(other), false, tostring(other))
  end
  t.eq(collation.is_mismatch(nil), false)
end)

t.test("log_warnings: each once, the mismatch with what to do instead of the server's hint", function()
  local code = [[
    local collation = require "lib.collation"
    local notice = ]] .. string.format("{ severity = %q, message = %q, detail = %q, hint = %q, text = %q }",
      NOTICE.severity, NOTICE.message, NOTICE.detail, NOTICE.hint, NOTICE.text) .. [[
    local said = collation.log_warnings({ notice, { severity = "NOTICE", text = "just so" } },
      { notice.text, "there are circular foreign-key constraints on this table" }, nil)
    io.write(tostring(said))]]
  local r = h.pgvault({ "-e", code })
  t.eq(r.code, 0, r.stderr)
  t.eq(r.stdout, "true")
  t.eq(r.stderr, 'pgvault: warning: database "shop" has a collation version mismatch. The database was created '
    .. "using collation version 2.31, but the operating system provides version 2.36. " .. collation.ADVICE .. "\n"
    .. "pgvault: info: just so\n"
    .. "pgvault: warning: there are circular foreign-key constraints on this table\n")
end)
