-- Backups stored under an S3 prefix: the same entries lib.catalog.scan
-- gives for a directory (newest first, with their manifest status; one
-- listing, manifests read 16 at a time), the newest complete one for
-- "latest" (one listing, manifests read newest first only until one fits),
-- opening one to stream (restore with one job) and fetching one into a
-- private directory, checked against its manifest (restore --jobs N).
local fs = require "pgvault.fs"
local pgvault = require "pgvault"
local s3 = require "pgvault.s3"
local stream = require "pgvault.stream"
local catalog = require "lib.catalog"
local manifest = require "lib.manifest"
local naming = require "lib.naming"

local s3backups = {}

local function prefix_url(url)
  local bucket, prefix = s3.parse_url(url)
  if prefix ~= "" and prefix:sub(-1) ~= "/" then prefix = prefix .. "/" end
  return bucket, prefix
end

-- A manifest, or nil and why when it is gone or not a valid one. A server
-- that fails to answer is an error, not a backup without a manifest: a
-- passing outage must not make 'latest' an older backup, or none.
local function read_manifest(client, url)
  local ok, text = pcall(client.get, client, url)
  if not ok then
    if pgvault.is_error(text) and text.http_status == 404 then return nil, url .. " is gone" end
    error(text, 0)
  end
  local dok, m = pcall(manifest.decode, text, url)
  if not dok then return nil, tostring(m) end
  return m
end

-- One listing of the prefix: the backups it holds (parsed names, newest
-- first, with key, size, path) and the size of every key in it.
local function listing(client, url)
  local bucket, prefix = prefix_url(url)
  local objs = client:list("s3://" .. bucket .. "/" .. prefix, { delimiter = "/" })
  local present, out = {}, {}
  for _, obj in ipairs(objs) do
    present[obj.key] = obj.size
    local b = naming.parse(obj.key)
    if b then
      b.key, b.size, b.path = obj.key, obj.size, "s3://" .. bucket .. "/" .. obj.key
      out[#out + 1] = b
    end
  end
  return catalog.newest_first(out), present, bucket
end

-- The manifest's URL when the listing shows one small enough to read;
-- otherwise sets the entry's status.
local function manifest_url(b, present, bucket)
  local mkey = naming.manifest_path(b.key)
  if present[mkey] == nil then
    b.status = "missing"
  elseif present[mkey] > manifest.MAX_BYTES then
    b.status, b.problem = "invalid", mkey .. " is too large to be a pgvault manifest"
  else
    return "s3://" .. bucket .. "/" .. mkey
  end
end

-- Judges an entry by its manifest's text (or the error reading it).
local function judge(b, url, text)
  if pgvault.is_error(text) then
    if text.http_status ~= 404 then error(text, 0) end
    b.status = "missing" -- removed since the listing
    return
  end
  local ok, m = pcall(manifest.decode, text, url)
  if ok then
    b.manifest, b.status = m, catalog.size_status(m, b.size)
  else
    b.status, b.problem = "invalid", tostring(m)
  end
end

-- Entries {name, stamp, time, env, ext, zst, age, path (s3://…), key, size,
-- status, manifest, problem}, newest first: one listing, the manifests
-- read at once (16 at a time).
function s3backups.scan(url, opts)
  local client <close> = s3.client(opts)
  local list, present, bucket = listing(client, url)
  local urls, entries = {}, {}
  for _, b in ipairs(list) do
    local murl = manifest_url(b, present, bucket)
    if murl then urls[#urls + 1], entries[#urls + 1] = murl, b end
  end
  for i, text in ipairs(client:get_many(urls, { parallel = 16 })) do judge(entries[i], urls[i], text) end
  return list
end

-- The newest complete backup under url (of database how.database when
-- given): one listing, then the manifests newest first, only until one is
-- valid, matches its archive's size and names that database; or, with
-- how.accept(b) (lib.catalog.chooser), until it takes one (of any status).
function s3backups.latest(url, opts, how)
  local database = (how or {}).database
  local accept = (how or {}).accept
    or function(b) return b.status == "ok" and (not database or b.manifest.database == database) end
  local client <close> = s3.client(opts)
  local list, present, bucket = listing(client, url)
  for _, b in ipairs(list) do
    local murl = manifest_url(b, present, bucket)
    if murl then
      local _, text = pcall(client.get, client, murl) -- text: the body, or the error
      judge(b, murl, text)
      if accept(b) then return b end
    end
  end
  pgvault.raise("io", string.format("no complete backup (one with a manifest)%s under %s",
    database and (" of database " .. database) or "", url))
end

-- s3://bucket/prefix/latest -> the newest complete backup's URL and its
-- entry (with its manifest); any other URL -> itself.
function s3backups.resolve(url, opts, how)
  local base = url:match("^(.*)/latest$")
  if not base then return url end
  local b = s3backups.latest(base .. "/", opts, how)
  return b.path, b
end

-- A backup to stream straight from the bucket (resolving …/latest), with
-- its manifest: {url=, manifest=, head = its first bytes, source = function
-- giving an s3.reader stage}. how.manifest: "required" (default: only
-- complete backups restore), "optional" (nil when there is none, an
-- error when it is unreadable) or "skip".
function s3backups.open(url, opts, how)
  local want = (how or {}).manifest or "required"
  local src, entry = s3backups.resolve(url, opts, how)
  local _, key = s3.parse_url(src)
  if key == "" or key:sub(-1) == "/" then
    pgvault.raise("usage", "name one backup: s3://BUCKET/PREFIX/NAME or s3://BUCKET/PREFIX/latest, not " .. src)
  end
  local client = s3.client(opts)
  -- …/latest: the listing gave the size and the manifest is read already
  local info = entry and { size = entry.size } or client:head(src)
  if not info then
    pgvault.raise("io", "no object " .. src .. " in the bucket: check the name ('pgvault list --from "
      .. "s3://BUCKET/PREFIX/' shows the backups)")
  end
  local m, why = entry and entry.manifest
  local murl = naming.manifest_path(src)
  if not m and (want == "required" or (want == "optional" and client:head(murl))) then
    m, why = read_manifest(client, murl)
    if not m and want == "required" then
      pgvault.raise("verify", "no usable manifest for " .. src .. " (" .. why .. "): only complete backups restore")
    elseif not m then
      pgvault.raise("verify", why)
    end
  end
  local head = info.size > 0 and client:get(src, { range = "bytes=0-63" }) or ""
  return { url = src, manifest = m, manifest_url = murl, head = head,
    source = function() return client:reader({ url = src }) end }
end

-- Downloads a backup (resolving .../latest) and its manifest into a new
-- private directory, checking size and SHA-256 against the manifest on
-- the way. Returns the local archive path and the directory to remove.
function s3backups.fetch(url, opts, how)
  local src, entry = s3backups.resolve(url, opts, how)
  local name = src:match("([^/]+)$")
  local client <close> = s3.client(opts)
  local m, why = entry and entry.manifest
  if not m then m, why = read_manifest(client, naming.manifest_path(src)) end
  if not m then
    pgvault.raise("verify", "no usable manifest for " .. src .. " (" .. why .. "): only complete backups restore")
  end
  local dir = fs.tmpdir("pgvault-s3")
  fs.chmod(dir, 448)
  local path = dir .. "/" .. name
  local ok, err = pcall(function()
    local expected = type(m.stored) == "table" and m.stored or {}
    stream.run { client:reader({ url = src }),
      stream.sha256 { bytes = expected.bytes, expect = expected.sha256, what = src },
      stream.file_writer(path, { mode = 384 }) }
    manifest.write(path, m)
  end)
  if not ok then
    pcall(fs.remove_tree, dir)
    error(err, 0)
  end
  log.info("fetched %s (%d bytes) for restore", src, fs.stat(path).size)
  return path, dir, src
end

return s3backups
