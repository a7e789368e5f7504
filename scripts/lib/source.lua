-- A backup to read (restore, verify): a file, standard input ("-"), a pipe
-- or FIFO, DIR/latest, or an object in a bucket (s3://…/NAME or …/latest),
-- with its manifest, its first bytes and its layers (lib.layers). Every
-- input is read once: standard input read by one pipeline (opts.once)
-- streams, its first bytes (read to recognise the layers) given back first;
-- a FIFO or <(…), or standard input read twice (restore, the drill), is
-- copied into a private temporary file as it is read (opening a FIFO again
-- would wait for a writer that may be gone); a bucket's object streams.
--   local src <close> = source.open(spec, { s3 = s3_options, manifest = "optional",
--                                           database = "app", once = true })
--   src.name, src.path | src.url, src.file (a local regular file), src.size,
--   src.manifest, src.manifest_path, src.head, src.layers
--   src:reader() -> a source stage; src:read_head(n) -> the first n bytes
local fs = require "pgvault.fs"
local pgvault = require "pgvault"
local stream = require "pgvault.stream"
local catalog = require "lib.catalog"
local layers = require "lib.layers"
local manifests = require "lib.manifest"
local naming = require "lib.naming"

local source = {}
local Source = {}
Source.__index = Source

local function is_s3(spec) return spec:sub(1, 5) == "s3://" end

-- "DIR/latest" or "s3://…/latest" -> the place, else nil.
local function latest_place(spec)
  local base = spec:match("^(.*)/latest$")
  if base and (is_s3(spec) or not fs.exists(spec)) then return base == "" and "/" or base end
  return nil
end

-- The newest complete backup (one with a good manifest) in `place`, of
-- opts.database when given, that lib.catalog.chooser takes: with trusted
-- keys (opts.trust, PGVAULT_TRUST), the newest one a trusted key signed,
-- each newer one passed over said in a warning line. Returns its path and
-- whether a trusted key's signature chose it.
function source.resolve_latest(place, opts)
  local accept = require("lib.trust").accepts(opts.trust, opts.s3)
  local choose, skipped = catalog.chooser(opts.database, opts.identities, accept)
  local list
  if is_s3(place) then
    -- one listing, manifests read newest first until one is taken
    local s3backups = require "lib.s3backups"
    local ok, b = pcall(s3backups.latest, place .. "/", opts.s3, { database = opts.database, accept = choose })
    if ok then return b.path, accept ~= nil end
    if not (pgvault.is_error(b) and b.message:find("^no complete backup")) then error(b, 0) end
  else
    list = catalog.scan(place)
    for _, b in ipairs(list) do
      if choose(b) then return b.path, accept ~= nil end
    end
  end
  local of = opts.database and (" of database " .. opts.database) or ""
  if accept and skipped() > 0 then
    pgvault.raise("trust", string.format("no complete backup%s in %s is signed by a trusted key (%d passed "
      .. "over, see above): check that --trust names the public key of your backup job's 'backup --sign KEY'",
      of, place, skipped()))
  end
  list = list or require("lib.s3backups").scan(place .. "/", opts.s3)
  local others, sealed = catalog.databases(list)
  if opts.database and sealed > 0 then
    -- with -i given, these are the ones its identities do not open
    local given = #(opts.identities or {}) > 0
    pgvault.raise("io", string.format("no complete backup of database %s in %s%s: %d encrypted ones keep their "
      .. "database in the sealed part of their manifest; %s", opts.database, place,
      #others > 0 and (" (it holds backups of " .. table.concat(others, ", ") .. ")") or "", sealed,
      given and "the identities given with -i open none of them: give the identity of a recipient they were "
        .. "encrypted to" or "give the identity that opens them with -i FILE"))
  end
  if opts.database and #others > 0 then
    pgvault.raise("io", string.format("no complete backup of database %s in %s (it holds backups of %s): "
      .. "name the backup, or choose the database with --database NAME", opts.database, place,
      table.concat(others, ", ")))
  end
  pgvault.raise("io", "no complete backup (one with a manifest) in " .. place)
end

-- Copies a pipe, FIFO or standard input once into a private file.
local function copy_once(self, spec)
  local dir = fs.tmpdir("pgvault-input")
  fs.chmod(dir, 448)
  self.tmpdir = dir
  local path = dir .. "/input"
  stream.run { spec == "-" and stream.stdin() or stream.file_reader(spec),
    stream.file_writer(path, { mode = 384 }) }
  return path
end

-- Standard input that one pipeline reads: its head is read here through
-- an unbuffered handle (a buffered one would take more than the head).
local function hold_stdin(self)
  io.stdin:setvbuf("no")
  self.head = io.stdin:read(layers.HEAD_BYTES) or ""
  self.pipe = "-"
end

local function open_local(self, spec, opts)
  self.name = spec
  local st = spec ~= "-" and fs.stat(spec)
  if opts.once and spec == "-" then return hold_stdin(self) end
  local path = spec
  if spec ~= "-" then
    if not st then pgvault.raise("io", "cannot read " .. spec .. ": no such file") end
    if st.type == "dir" then pgvault.raise("io", "cannot read " .. spec .. ": it is a directory") end
    if st.type ~= "file" then path = copy_once(self, spec) end
    if opts.manifest ~= "skip" and st.type == "file" then
      local m, text_or_why = manifests.for_archive(spec)
      self.manifest, self.manifest_text, self.why = m, m and text_or_why, not m and text_or_why
      self.manifest_path = naming.manifest_path(spec)
      if not self.manifest and opts.manifest == "required" then
        pgvault.raise("verify", "no manifest for " .. spec .. " (" .. self.why .. "): only complete backups restore")
      end
    end
  else
    path = copy_once(self, spec)
  end
  self.path, self.file, self.size = path, path, fs.stat(path).size
  local f <close> = assert(io.open(path, "rb"))
  self.head = f:read(layers.HEAD_BYTES) or ""
end

local function open_bucket(self, spec, opts)
  local want = opts.manifest or "optional"
  local b = require("lib.s3backups").open(spec, opts.s3, { manifest = want })
  self.name, self.url, self.remote = b.url, b.url, true
  self.manifest, self.manifest_path, self.head, self.stage = b.manifest, b.manifest_url, b.head, b.source
  if not self.manifest then self.why = want == "skip" and "not read" or ("no manifest " .. b.manifest_url) end
end

-- --database NAME chooses among backups (…/latest); with another SRC it
-- would be ignored, so it is a usage error (the scripts call this; Lua
-- callers such as neon-restore pass `database` for any source).
function source.check_choosing(spec, o)
  if type(spec) == "string" and latest_place(spec) then return end
  if o.database then
    pgvault.raise("usage", string.format("--database chooses among backups: use it with DIR/latest or "
      .. "s3://BUCKET/PREFIX/latest, not %s", tostring(spec)))
  end
end

-- `spec` with a …/latest resolved (source.resolve_latest, said in an info
-- line), and whether it was one; any other spec is itself. restore, verify
-- and download take …/latest through this one step.
function source.latest(spec, opts)
  local place = latest_place(spec)
  if not place then return spec, false end
  local path, signed = source.resolve_latest(place, opts)
  log.info("the newest complete backup%s in %s%s is %s", opts.database and (" of database " .. opts.database) or "",
    place, signed and " signed by a trusted key" or "", path)
  return path, true
end

-- opts: identities (open encrypted manifests' private parts for …/latest),
-- s3 (options of pgvault.s3), manifest ("required", "optional" or
-- "skip"), database (…/latest picks a backup of this database), trust
-- (files of trusted public keys: …/latest picks one they signed).
function source.open(spec, opts)
  opts = opts or {}
  if type(spec) ~= "string" or spec == "" then pgvault.raise("usage", "name the backup to read") end
  local self = setmetatable({ s3 = opts.s3, opts = opts }, Source)
  spec = source.latest(spec, opts)
  if is_s3(spec) then open_bucket(self, spec, opts) else open_local(self, spec, opts) end
  self.layers = layers.require(self.head, self.name, self.manifest)
  return self
end

-- A new source stage giving the stored bytes from the start (held standard
-- input: once).
function Source:reader()
  if self.remote then return self.stage() end
  if self.pipe then
    if self.pipe_read then pgvault.raise("internal", "standard input is read once, and it was already") end
    self.pipe_read = true
    return stream.stdin { prefix = self.head }
  end
  return stream.file_reader(self.file)
end

-- The first `n` bytes (fewer when the backup is shorter).
function Source:read_head(n)
  if self.remote then
    local client <close> = require("pgvault.s3").client(self.s3)
    return client:get(self.url, { range = string.format("bytes=0-%d", n - 1) })
  end
  local f <close> = assert(io.open(self.file, "rb"))
  return f:read(n) or ""
end

-- Makes the backup a local regular file (pg_restore --jobs needs one): an
-- object is fetched into a private directory, checked against its manifest.
function Source:localize()
  if self.file then return self.file end
  local path, dir = require("lib.s3backups").fetch(self.url, self.s3)
  self.fetched, self.file, self.size = dir, path, fs.stat(path).size
  return path
end

-- The newest other complete backup of `database` in the same place (with
-- trusted keys, one they signed), or nil: for a message, so quietly.
function Source:previous(database)
  local place = self.remote and self.url:match("^(.*/)[^/]*$") or (self.name:match("^(.*)/[^/]*$") or ".")
  local ok, path = pcall(function()
    local list = self.remote and require("lib.s3backups").scan(place, self.s3) or catalog.scan(place)
    local accept = require("lib.trust").accepts(self.opts.trust, self.s3)
    for _, b in ipairs(list) do
      if b.path ~= self.name and catalog.fits(b, database, self.opts.identities) and (not accept or accept(b)) then
        return b.path
      end
    end
  end)
  return ok and path or nil
end

function Source:close()
  if self.tmpdir then pcall(fs.remove_tree, self.tmpdir) end
  if self.fetched then pcall(fs.remove_tree, self.fetched) end
  self.tmpdir, self.fetched = nil, nil
end
Source.__close = Source.close

return source
