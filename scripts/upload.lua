-- upload a file (or standard input) to S3 in parallel, checked parts
local cli = require "lib.cli"
local s3cli = require "lib.s3cli"
local fs = require "pgvault.fs"
local s3 = require "pgvault.s3"
local stream = require "pgvault.stream"

local o = cli.parse(arg, {
  usage = "pgvault upload FILE s3://BUCKET/KEY [options]",
  summary = "Uploads FILE ('-' for standard input) to s3://BUCKET/KEY (a KEY ending in '/' gets\n"
    .. "FILE's name). Small files go in one PutObject, larger ones in parallel multipart parts,\n"
    .. "each checked with Content-MD5 and its ETag. On failure or Ctrl-C the multipart upload\n"
    .. "is aborted: nothing appears under KEY. Prints the object's address and SHA-256.",
  options = s3cli.with_options({}, { upload = true }),
  positionals = { { "FILE", "the file to upload, or - for standard input" }, { "DEST", "s3://BUCKET/KEY" } },
})

if not s3cli.is_s3(o.DEST) then
  require("pgvault").raise("usage", "the destination must be s3://BUCKET/KEY, not '" .. o.DEST .. "'")
end
local dest = o.DEST
if dest:sub(-1) == "/" then
  if o.FILE == "-" then require("pgvault").raise("usage", "name the key when uploading standard input") end
  dest = dest .. o.FILE:match("([^/]+)$")
end
local bucket, key = s3.parse_url(dest)
if key == "" then require("pgvault").raise("usage", "the destination must name a key: s3://BUCKET/KEY") end

local source, expected
if o.FILE == "-" then
  source = stream.stdin()
else
  local st = fs.stat(o.FILE)
  if not st then require("pgvault").raise("io", "cannot upload " .. o.FILE .. ": no such file") end
  if st.type == "dir" then require("pgvault").raise("io", "cannot upload " .. o.FILE .. ": it is a directory") end
  if st.type == "file" then expected = st.size end
  source = stream.file_reader(o.FILE)
end

local r = stream.run { source, stream.sha256(), s3.writer(s3cli.opts(o, { url = dest, expected_size = expected })) }
log.info("uploaded %s to s3://%s/%s in %s (%d part%s)", cli.bytes(r.bytes), bucket, key, cli.duration(r.seconds),
  r.s3.parts, r.s3.parts == 1 and "" or "s")
print(string.format("s3://%s/%s  sha256:%s", bucket, key, r.sha256.sha256))
