-- download an S3 object to a file, checked against its backup manifest
local cli = require "lib.cli"
local manifests = require "lib.manifest"
local naming = require "lib.naming"
local s3cli = require "lib.s3cli"
local pgvault = require "pgvault"
local s3 = require "pgvault.s3"
local stream = require "pgvault.stream"
local trust = require "lib.trust"

local o = cli.parse(arg, cli.with_options({
  usage = "pgvault download s3://BUCKET/KEY [-o FILE] [options]",
  summary = "Streams the object to FILE (default: the key's last part in the current directory;\n"
    .. "'-' for standard output). A regular file is written as FILE.partial and renamed only\n"
    .. "once complete. When KEY.manifest.json exists beside it (a pgvault backup), the size and\n"
    .. "SHA-256 are checked against the manifest before the file is committed.",
  options = s3cli.with_options({
    { "output", "o", "FILE", "where to write (- for standard output)" },
    { "no-verify", nil, false, "do not look for a manifest" },
    { "force", "f", false, "overwrite an existing FILE" },
  }),
  positionals = { { "SOURCE", "s3://BUCKET/KEY" } },
}, trust.TRUST_OPTIONS))

if not s3cli.is_s3(o.SOURCE) then
  pgvault.raise("usage", "the source must be s3://BUCKET/KEY, not '" .. o.SOURCE .. "'")
end
local _, key = s3.parse_url(o.SOURCE)
if key == "" or key:sub(-1) == "/" then pgvault.raise("usage", "the source must name an object: s3://BUCKET/KEY") end
local out = o.output or key:match("([^/]+)$")

local client <close> = s3.client(s3cli.opts(o))

-- --trust KEY.pub (or PGVAULT_TRUST): the object is taken only when its
-- manifest is signed by a trusted key and names it; each block is then
-- checked as it passes, so nothing unchecked reaches FILE.
if o.no_verify and (#o.trust > 0 or os.getenv("PGVAULT_TRUST")) then
  pgvault.raise("usage", "--no-verify and --trust contradict each other")
end
local trusted = trust.authenticate_object(client, o.SOURCE, o)
local manifest
if not o.no_verify and key:sub(-#naming.MANIFEST_SUFFIX) ~= naming.MANIFEST_SUFFIX then
  local murl = naming.manifest_path(o.SOURCE)
  if client:head(murl) then
    local ok, m = pcall(manifests.decode, client:get(murl), murl)
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
if out ~= "-" then print(out) end
