-- dump a database into a compressed custom-format archive with a manifest
local backup = require "lib.backup"
local cli = require "lib.cli"
local s3cli = require "lib.s3cli"

local o = cli.parse(arg, {
  usage = "pgvault backup --db URL [--to DIR] [--suffix NAME] [--compress zstd|pg|none] [--level N] "
    .. "[-r RECIPIENT]... [-R FILE]...",
  summary = "Dumps the database with pg_dump (custom format) into DIR/YYYYMMDDHHMMSS_<suffix>.backup\n"
    .. "(UTC) plus <name>.manifest.json, written once the archive is complete. By default pg_dump\n"
    .. "writes an uncompressed archive that pgvault compresses with zstd on every core into\n"
    .. "….backup.zst ('zstd -d' gives back a plain archive); --compress pg keeps pg_dump's own\n"
    .. "gzip in a plain .backup, none stores it raw. Prints the archive's path last on stdout.\n"
    .. "If pg_dump fails or is killed, nothing is left under the final name.",
  options = s3cli.with_options({
    { "db", "d", "URL", "the database (postgresql://user@host:port/db or a conninfo string)" },
    { "to", "o", "DIR", "where to write: a directory or s3://BUCKET/PREFIX/ (default db_backups)" },
    { "suffix", "s", "NAME", "environment name in the file name (default local)" },
    { "compress", "c", "METHOD", "zstd (default), pg or none" },
    { "level", "l", "N", "compression level (zstd 1-19, default 3; pg 1-9, default 6)" },
    { "pg-bin", nil, "DIR", "directory of the pg_dump to use (default: the newest that fits the server)" },
    { "recipient", "r", "RECIPIENT", "encrypt the backup to an age recipient (….backup.zst.age)", multi = true },
    { "recipients-file", "R", "FILE", "encrypt to every age recipient listed in FILE", multi = true },
  }, { upload = true }),
  epilog = "The password may be in the URL, PGPASSWORD or ~/.pgpass; it never reaches a command line.",
})
if not o.db then
  require("pgvault").raise("usage", "missing --db URL (see 'pgvault backup --help')")
end
-- Encryption (age) as the archive streams: a filter after compression, ".age"
-- on the name, and the recipients' fingerprints (never secrets) in the manifest.
local crypto = require "pgvault.crypto"
local recipients = {}
for _, r in ipairs(o.recipient) do recipients[#recipients + 1] = crypto.check_recipient(r) end
for _, f in ipairs(o.recipients_file) do
  for _, r in ipairs(crypto.read_recipients(f)) do recipients[#recipients + 1] = r end
end
local filters, extension, encryption
if #recipients > 0 then
  local fingerprints = {}
  for i, r in ipairs(recipients) do fingerprints[i] = crypto.fingerprint(r) end
  filters, extension = { crypto.encryptor { recipients = recipients } }, ".age"
  encryption = { method = "age", recipients = fingerprints }
end
local b = backup.run { db = o.db, to = o.to, suffix = o.suffix, compress = o.compress, level = o.level,
  pg_bin = o.pg_bin, filters = filters, extension = extension, encryption = encryption, s3 = s3cli.opts(o) }
print(b.path)
