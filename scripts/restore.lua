-- restore a backup into a new database, check it, then swap it in
local cli = require "lib.cli"
local restore = require "lib.restore"
local s3cli = require "lib.s3cli"

local o = cli.parse(arg, {
  usage = "pgvault restore SRC --db URL [--jobs N] [--drop-old] [--in-place --yes] [-i FILE]...",
  summary = "Restores SRC (a .backup, .backup.zst or .age file, or an s3:// object, streamed) into a\n"
    .. "NEW database created from template0 with the target's owner, encoding and locale, checks\n"
    .. "it (pg_restore's exit status, the file's SHA-256 and per-table row counts against the\n"
    .. "manifest when it records them), then swaps names: the database named in URL becomes\n"
    .. "<db>_old_<YYYYMMDDHHMMSS> (unless --drop-old) and the restored one takes its name.\n"
    .. "Other sessions on the old database are terminated for the rename (each is logged);\n"
    .. "connections are refused meanwhile. A failed restore drops the new database and leaves\n"
    .. "the live one as it was.",
  options = s3cli.with_options({
    { "db", "d", "URL", "the database to restore (its name is kept; it need not exist yet)" },
    { "jobs", "j", "N", "parallel pg_restore jobs (a .zst, .age or s3:// backup is laid down as a temporary file)" },
    { "drop-old", nil, false, "drop the previous database after a successful swap" },
    { "count-rows", nil, false, "check row counts with count(*) on every table (slow on big databases) instead of "
      .. "the server's count of rows inserted (differences are always re-counted)" },
    { "in-place", nil, false, "old behaviour: drop the database, create it again and restore into it" },
    { "yes", "y", false, "confirm --in-place" },
    { "pg-bin", nil, "DIR", "directory of the pg_restore to use (default: the newest here)" },
    { "identity", "i", "FILE", "age identity file to decrypt an encrypted (.age) backup", multi = true },
  }),
  positionals = { { "SRC", "the backup file, or s3://BUCKET/PREFIX/NAME (…/latest: the newest complete one)" } },
})
if not o.db then require("pgvault").raise("usage", "missing --db URL (see 'pgvault restore --help')") end
local identities = {}
for _, f in ipairs(o.identity) do
  for _, id in ipairs(require("pgvault.crypto").read_identities(f)) do identities[#identities + 1] = id end
end
local src, fetched, streamed = o.SRC, nil, nil
if s3cli.is_s3(o.SRC) then
  local jobs = tonumber(o.jobs or 1)
  if jobs and jobs > 1 then
    -- pg_restore --jobs needs a file: fetched (and checked against its
    -- manifest) into a private directory first.
    local path, dir, url = require("lib.s3backups").fetch(o.SRC, s3cli.opts(o))
    src, fetched, o.SRC = path, dir, url
  else
    -- One job: the object streams from the bucket into pg_restore, its size
    -- and SHA-256 checked against the manifest by a tap on the way.
    streamed = require("lib.s3backups").open(o.SRC, s3cli.opts(o))
    src, o.SRC = streamed.url, streamed.url
  end
end
local ok, r = pcall(restore.run, { src = src, db = o.db, jobs = o.jobs, drop_old = o.drop_old, in_place = o.in_place,
  count_rows = o.count_rows,
  yes = o.yes, pg_bin = o.pg_bin, identities = identities, source = streamed and streamed.source,
  head = streamed and streamed.head, manifest = streamed and streamed.manifest })
if fetched then pcall(require("pgvault.fs").remove_tree, fetched) end
if not ok then error(r, 0) end
if r.old then
  print(string.format("restored %s into %s; the previous database is kept as %s", o.SRC, r.database, r.old))
else
  print(string.format("restored %s into %s", o.SRC, r.database))
end
