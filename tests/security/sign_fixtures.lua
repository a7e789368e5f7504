-- What the signing attack tests share: a hostile pg_dump archive whose
-- restore runs SQL as the restoring role (here a superuser, as in
-- production), the marker that SQL leaves behind, and an attacker's tools
-- (zstd, age to the public recipient, a skippable zstd frame to make a
-- replacement exactly as long as the original).
local h = require "harness.env"
local fs = require "pgvault.fs"

local f = {}

f.PG = h.pg()
f.ADMIN = f.PG.admin_url("postgres")

-- A superuser's URL of database `db`: restores run as the superuser that
-- production restores run as, which is what makes hostile SQL dangerous.
function f.superuser_url(db)
  return f.PG.admin_url(db)
end

function f.role_exists(role)
  return h.psql(f.ADMIN, "SELECT count(*) FROM pg_roles WHERE rolname = '" .. role .. "';"):match("%d+") == "1"
end

function f.drop_role(role)
  h.psql(f.ADMIN, "DROP ROLE IF EXISTS " .. role .. ";")
end

function f.databases(prefix)
  local out = h.psql(f.ADMIN, "SELECT datname FROM pg_database WHERE datname LIKE '" .. prefix .. "%' ORDER BY 1;")
  local list = {}
  for name in out:gmatch("[^\n]+") do list[#list + 1] = name end
  return list
end

-- A custom-format archive of a small database whose restore, anywhere but
-- in its own database, creates role `marker` as the restoring role: a
-- CHECK constraint calls a function that does it for every row pg_restore
-- loads. Returns the archive's path.
function f.hostile_archive(dir, source_db, marker)
  local url = h.createdb(source_db)
  h.psql(url, string.format([[
CREATE FUNCTION shadow(i int) RETURNS boolean LANGUAGE plpgsql AS $fn$
BEGIN
  IF current_database() <> '%s' AND NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN
    EXECUTE 'CREATE ROLE %s SUPERUSER';
  END IF;
  RETURN true;
END $fn$;
CREATE TABLE notes (id int CHECK (shadow(id)), body text);
INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 50) g;
]], source_db, marker, marker))
  local path = dir .. "/hostile.backup"
  local pw = url:match("^%w+://[^:/@]*:([^@]*)@")
  local clean = url:gsub("^(%w+://[^:/@]*):[^@]*@", "%1@")
  local r = h.run({ f.PG.bindir .. "/pg_dump", "-Fc", "-Z", "0", "-f", path, "-d", clean },
    { env = { PGPASSWORD = pw or false } })
  assert(r.code == 0, "pg_dump of the hostile database: " .. r.stderr)
  h.dropdb(source_db)
  return path
end

function f.zstd(path, out)
  local r = h.run({ "zstd", "-q", "-f", "-o", out, path })
  assert(r.code == 0, r.stderr)
  return out
end

-- age-encrypts `path` to `recipient`, as anyone holding the public key can.
function f.age(path, recipient, out)
  local r = h.run({ "age", "-r", recipient, "-o", out, path })
  assert(r.code == 0, r.stderr)
  return out
end

-- Appends a skippable zstd frame (ignored by every decompressor) so that
-- the file at `path` becomes `size` bytes long.
function f.pad_zstd(path, size)
  local data = fs.read_file(path)
  local pad = size - #data - 8
  assert(pad >= 0, string.format("cannot pad %d bytes to %d", #data, size))
  h.write(path, data .. "\x50\x2A\x4D\x18" .. string.pack("<I4", pad) .. string.rep("\0", pad))
  return path
end

-- An attack failed as it must: exit 1 with `pattern` in the error, the
-- hostile SQL not run (the marker role absent; dropped if it is not), and
-- no database named like `db_prefix` left behind.
function f.refused(t, r, pattern, what, marker, db_prefix)
  local ran = f.role_exists(marker)
  f.drop_role(marker)
  t.eq(r.code, 1, what .. ": exit code; " .. r.stderr)
  t.match(r.stderr, pattern, what)
  t.eq(ran, false, what .. ": the hostile SQL did not run")
  t.eq(f.databases(db_prefix), {}, what .. ": no database left behind")
end

return f
