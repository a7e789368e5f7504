-- download an S3 object to a file, checked against its backup manifest
local cli = require "lib.cli"
local manifests = require "lib.manifest"
local naming = require "lib.naming"
local s3cli = require "lib.s3cli"
local source = require "lib.source"
local fs = require "pgvault.fs"
local pgvault = require "pgvault"
local s3 = require "pgvault.s3"
local stream = require "pgvault.stream"
local trust = require "lib.trust"

local o = cli.parse(arg, cli.with_options({
  usage = "pgvault download s3://BUCKET/KEY [-o FILE] [options]",
  summary = "Streams the object to FILE (default: the key's last part in the current directory;\n"
    .. "'-' for standard output). A regular file is written as FILE.partial and renamed only\n"
    .. "once complete. When KEY.manifest.json exists beside it (a pgvault backup), the size and\n"
    .. "SHA-256 are checked against the manifest before the file is committed.\n"
    .. "s3://BUCKET/PREFIX/latest is the newest complete backup there, chosen as restore and verify\n"
    .. "choose it (--database, --trust, -i); its manifest (and .minisig) are written beside FILE too.",
  options = s3cli.with_options({
    { "output", "o", "FILE", "where to write (- for standard output)" },
    { "no-verify", nil, false, "do not look for a manifest" },
    { "force", "f", false, "overwrite an existing FILE (and, with …/latest, its manifest)" },
    { "database", nil, "NAME", "with …/latest: the newest backup of database NAME" },
    { "identity", "i", "FILE", "with …/latest --database: age identity that opens encrypted manifests",
      multi = true },
  }),
  positionals = { { "SOURCE", "s3://BUCKET/KEY, or s3://BUCKET/PREFIX/latest" } },
}, trust.TRUST_OPTIONS))

if not s3cli.is_s3(o.SOURCE) then
  pgvault.raise("usage", "the source must be s3://BUCKET/KEY, not '" .. o.SOURCE .. "'")
end
if o.no_verify and (#o.trust > 0 or os.getenv("PGVAULT_TRUST")) then
  pgvault.raise("usage", "--no-verify and --trust contradict each other")
end
source.check_choosing(o.SOURCE, o) -- --database (and -i) only with …/latest
if #o.identity > 0 and not o.SOURCE:find("/latest$") then
  pgvault.raise("usage", "-i opens encrypted manifests to choose among backups: use it with s3://BUCKET/PREFIX/latest")
end
local s3opts = s3cli.opts(o)
-- …/latest: chosen as restore and verify choose it (lib.source.latest)
local latest
o.SOURCE, latest = source.latest(o.SOURCE, { s3 = s3opts, database = o.database, identities = o.identity,
  trust = o.trust })
local _, key = s3.parse_url(o.SOURCE)
if key == "" or key:sub(-1) == "/" then pgvault.raise("usage", "the source must name an object: s3://BUCKET/KEY") end
local out = o.output or key:match("([^/]+)$")
-- said before a byte moves (file_writer's no_clobber still guards the race)
for _, path in ipairs({ out, latest and naming.manifest_path(out) or nil }) do
  local st = out ~= "-" and not o.force and fs.stat(path, true)
  if st and (st.type == "file" or st.type == "link") then -- /dev/null or a FIFO is written through
    pgvault.raise("exists", string.format("%s already exists: name another file with -o FILE, or overwrite it with -f",
      path), { path = path })
  end
end

local client <close> = s3.client(s3opts)

-- --trust KEY.pub (or PGVAULT_TRUST): the object is taken only when its
-- manifest is signed by a trusted key and names it; each block is then
-- checked as it passes, so nothing unchecked reaches FILE.
local trusted = trust.authenticate_object(client, o.SOURCE, o)
local manifest, manifest_text
local murl = naming.manifest_path(o.SOURCE)
if not o.no_verify and key:sub(-#naming.MANIFEST_SUFFIX) ~= naming.MANIFEST_SUFFIX then
  if client:head(murl) then
    manifest_text = client:get(murl)
    local ok, m = pcall(manifests.decode, manifest_text, murl)
    if not ok or type(m.stored) ~= "table" then
      pgvault.raise("verify", murl .. " is not a readable manifest; use --no-verify to download anyway")
    end
    manifest = m
  end
end

-- The check (stream.sha256 with what the manifest expects) finishes before
-- the sink commits, so a mismatch leaves no file under the final name.
local sink
if out == "-" then
  sink = stream.stdout()
else
  sink = stream.file_writer(out, { no_clobber = not o.force })
end
local expected = manifest and manifest.stored or {}
local stages = { client:reader({ url = o.SOURCE }) }
stages[#stages + 1] = trust.verifier(trusted) or nil -- with --trust: each block checked before it goes on
stages[#stages + 1] = stream.sha256 { bytes = expected.bytes, expect = expected.sha256, what = o.SOURCE }
stages[#stages + 1] = sink
local r = stream.run(stages)
log.info("downloaded %s from %s in %s%s", cli.bytes(r.bytes), o.SOURCE, cli.duration(r.seconds),
  manifest and " (matches its manifest)" or "")
-- …/latest names a backup the user did not: its signature, then its
-- manifest (the commit marker, last), as fetched, go beside FILE so that
-- `restore FILE` (--trust) and `verify FILE` check it as in the bucket.
if latest and manifest_text and out ~= "-" then
  local sigurl = murl .. trust.SIGNATURE_SUFFIX
  if client:head(sigurl) then
    fs.write_file(naming.manifest_path(out) .. trust.SIGNATURE_SUFFIX, client:get(sigurl), { no_clobber = not o.force })
  end
  fs.write_file(naming.manifest_path(out), manifest_text, { no_clobber = not o.force })
end
if out ~= "-" then print(out) end
