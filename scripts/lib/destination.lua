-- Where backups are written: a directory or s3://BUCKET/PREFIX/. A backup
-- reserves its name before it writes a byte, so two backups never share
-- one (a second one in the same second gets STAMP-2_…, see lib.naming),
-- and nothing is ever overwritten: the archive is linked into place only
-- if its name is free (a bucket: a conditional PUT), and so is the
-- manifest, written last, which commits the backup.
--   local dest <close> = destination.open(to, { s3 = s3_options })
--   dest:sink() -> the last stage of a list    dest:reserve(stamp, suffix, ext) -> path
--   dest:writer() -> the stage writing the archive under the reserved name
--   dest:write_beside(suffix, data)             (e.g. a signature, before the manifest)
--   dest:commit(manifest or text) -> the manifest's path
-- Closing an uncommitted destination removes what it wrote; closing any
-- releases the reservation.
local fs = require "pgvault.fs"
local pgvault = require "pgvault"
local stream = require "pgvault.stream"
local manifests = require "lib.manifest"
local naming = require "lib.naming"

local destination = {}
destination.DEFAULT = "db_backups"
-- Backups one place may take in one second (names STAMP-2_ … STAMP-999_).
destination.MAX_PER_SECOND = 999

local Dest = {}
Dest.__index = Dest

local function is_s3(to) return type(to) == "string" and to:sub(1, 5) == "s3://" end

function destination.open(to, opts)
  to = to or destination.DEFAULT
  local self = setmetatable({ to = to, remote = is_s3(to), s3 = opts and opts.s3 or {}, beside = {} }, Dest)
  -- what dest:sink() gives: a place in a stage list that the writer takes
  -- once the name is reserved
  self.SINK = setmetatable({}, { __tostring = function() return "the archive of a backup to " .. to end })
  if self.remote then
    self.base = to:gsub("/+$", "")
  else
    self.base = to
    fs.mkdir_p(to)
    if not fs.writable(to) then pgvault.raise("io", "cannot write to " .. to .. ": check its permissions") end
  end
  return self
end

function Dest:client()
  if not self._client then self._client = require("pgvault.s3").client(self.s3) end
  return self._client
end

local function taken(err)
  return type(err) == "table" and err.kind == "exists"
end

-- In a bucket, how long a claim waits before it reads its object back: a
-- server that ignores If-None-Match lets a second writer replace the
-- object, and whoever reads back another's token has lost.
destination.CLAIM_SETTLE = 0.5

-- Claims `name` in this place (a new file or object holding `data`, which
-- must be unique to this claim); false when it is taken.
function Dest:claim(name, data)
  local where = self.base .. "/" .. name
  if self.remote then
    local c = self:client()
    if c:head(where) then return false end
    local ok, err = pcall(c.put, c, where, data, { if_none_match = true })
    if not ok and taken(err) then return false end
    if not ok then error(err, 0) end
    require("pgvault.proc").sleep(destination.CLAIM_SETTLE)
    local rok, back = pcall(c.get, c, where)
    return rok and back == data
  end
  local ok, err = pcall(naming.claim, where, data)
  if not ok and taken(err) then return false end
  if not ok then error(err, 0) end
  return true
end

-- Removes the claim `name` if it holds `data` (this claim's own: unique),
-- after Ctrl-C too; quietly, as a claim that did not land is no failure.
function Dest:unclaim(name, data)
  local where = self.base .. "/" .. name
  pcall(pgvault.uninterrupted, function()
    local text
    if self.remote then
      local c = self:client()
      local ok, back = pcall(c.get, c, where)
      text = ok and back or nil
    else
      text = fs.exists(where) and fs.read_file(where) or nil
    end
    if text == data then self:remove(name) end
  end)
end

-- Removes what this backup wrote; a failure (the keys revoked, the disk
-- gone) is a warning: the error that ended the backup is the one to see,
-- and prune sweeps the leftover once it is older than --grace.
function Dest:remove(name)
  local where = self.base .. "/" .. name
  local ok, err
  if self.remote then
    -- (after Ctrl-C too: this is the clean-up the interruption asks for)
    local c = self:client()
    ok, err = pcall(pgvault.uninterrupted, c.delete, c, where)
  else
    ok, err = os.remove(where)
    if not ok and not fs.exists(where) then ok = true end
  end
  if not ok then
    log.warn("could not remove %s (%s); 'pgvault prune' removes it once older than --grace", where,
      pgvault.is_error(err) and err.message or tostring(err))
  end
end

-- Whether any file of a backup with this stem is here already (kind: what
-- follows the stem, ".backup" unless given).
function Dest:stem_used(stem, kind)
  kind = kind or ".backup"
  if self.remote then
    return #self:client():list(self.base .. "/" .. stem .. kind) > 0
  end
  for _, ext in ipairs(naming.EXTENSIONS) do
    local archive = self.base .. "/" .. stem .. kind .. ext
    if fs.exists(archive) or fs.exists(naming.manifest_path(archive)) then return true end
  end
  return false
end

-- Reserves the first free name for a backup taken at `stamp`; returns its
-- path (or URL). kind: what follows the stem instead of ".backup" (lib.globals'
-- "_globals.sql"). First sweeps what killed backups left here.
function Dest:reserve(stamp, suffix, ext, kind)
  self:sweep()
  -- who holds it (prune and the next backup sweep a reservation whose
  -- process is gone), JSON
  local note = require("lib.lock").claim_note("reservation")
  for seq = 1, destination.MAX_PER_SECOND do
    local stem = naming.stem(stamp, suffix, seq)
    local reservation = naming.reservation_name(stem)
    local ok, claimed = pcall(self.claim, self, reservation, note)
    if not ok then
      -- (interrupted or failed after the PUT may have landed: ours goes)
      self:unclaim(reservation, note)
      error(claimed, 0)
    end
    if claimed then
      -- (recorded at once: an interruption from here on releases it)
      self.reservation = reservation
      if not self:stem_used(stem, kind) then
        self.name = kind and (stem .. kind .. (ext or "")) or naming.archive_name(stamp, suffix, ext, seq)
        self.path = self.base .. "/" .. self.name
        return self.path
      end
      self.reservation = nil
      self:remove(reservation)
    end
  end
  pgvault.raise("exists", string.format("%s holds %d backups of %s taken in second %s: no name is free", self.to,
    destination.MAX_PER_SECOND, suffix, stamp))
end

-- Names here (a directory's entries, or a bucket's keys under the base
-- starting with `prefix`, relative to the base).
function Dest:names(prefix)
  local out = {}
  if self.remote then
    local within = self.base:gsub("^s3://[^/]+/?", "")
    local skip = within == "" and 1 or #within + 2
    for _, o in ipairs(self:client():list(self.base .. "/" .. prefix, { delimiter = "/" })) do
      out[#out + 1] = o.key:sub(skip)
    end
  else
    for _, name in ipairs(fs.listdir(self.base)) do
      if name:sub(1, #prefix) == prefix then out[#out + 1] = name end
    end
  end
  return out
end

-- The stems whose reservation was made by a process of this machine that
-- is certainly gone (lib.lock.process_gone: same boot, its pid gone or
-- reused).
function Dest:dead_stems()
  local lock, stems = require "lib.lock", {}
  local me = lock.identity()
  for _, name in ipairs(self:names(".")) do
    local stem = name:match("^%.(.+)" .. naming.RESERVATION_SUFFIX:gsub("%p", "%%%0") .. "$")
    if stem then
      local where = self.base .. "/" .. name
      local ok, text = pcall(function()
        if self.remote then return self:client():get(where) end
        return fs.read_file(where)
      end)
      local info = ok and lock.claimant(text)
      if info and lock.process_gone(info, me) then stems[#stems + 1] = { stem = stem, pid = info.pid, name = name } end
    end
  end
  return stems
end

-- What a backup killed on this machine (SIGKILL, a crash) left behind,
-- once its holder is certainly gone: everything of its name that no
-- manifest commits (temporary files, an archive or a signature without
-- its manifest, unfinished multipart uploads), then the reservation. What
-- a holder elsewhere left waits for prune's --grace. A failure is a
-- warning: the backup goes on.
function Dest:sweep()
  if self.swept then return end
  self.swept = true
  local ok, err = pcall(function()
    for _, d in ipairs(self:dead_stems()) do
      local names, removed = {}, {}
      for _, n in ipairs(self:names(d.stem .. ".backup")) do names[n] = true end
      for _, n in ipairs(self.remote and {} or self:names("." .. d.stem .. ".backup")) do
        if n:match("%.partial$") then removed[#removed + 1] = n end
      end
      for _, n in ipairs(self.remote and {} or self:names(".." .. d.stem .. naming.RESERVATION_SUFFIX)) do
        if n:match("%.partial$") then removed[#removed + 1] = n end
      end
      for n in pairs(names) do
        local archive = n:match("^(.-)%.minisig$") and n:gsub("%.manifest%.json%.minisig$", "") or n
        if not n:match("%.manifest%.json$") and not names[archive .. naming.MANIFEST_SUFFIX] then
          removed[#removed + 1] = n
        end
      end
      if self.remote then
        local c = self:client()
        for _, u in ipairs(c:uploads(self.base .. "/" .. d.stem .. ".backup")) do
          log.info("aborting the unfinished upload of %s, left by a backup that did not finish (pid %s)", u.key,
            tostring(d.pid))
          c:abort_upload(self.base:match("^s3://[^/]+") .. "/" .. u.key, u.upload_id)
        end
      end
      table.sort(removed)
      removed[#removed + 1] = d.name
      for _, n in ipairs(removed) do
        log.info("removing %s/%s, left by a backup that did not finish (pid %s is gone)", self.base, n,
          tostring(d.pid))
        self:remove(n)
      end
    end
  end)
  if not ok then
    log.warn("could not sweep what earlier backups left in %s (%s); 'pgvault prune' removes it once older "
      .. "than --grace", self.to, pgvault.is_error(err) and err.message or tostring(err))
  end
end

-- The last stage of a backup's list: the writer of the archive, once the
-- name is reserved (lib.backup.pipeline puts dest:writer() in its place).
function Dest:sink()
  return self.SINK
end

-- The stage that writes the archive under the reserved name.
function Dest:writer()
  assert(self.path, "reserve a name first")
  if self.remote then
    local so = {}
    for k, v in pairs(self.s3) do so[k] = v end
    so.url, so.if_none_match = self.path, true
    return require("pgvault.s3").writer(so)
  end
  return stream.file_writer(self.path, { no_clobber = true, mode = 384 })
end

-- Writes PATH<suffix> beside the archive, only if that name is free.
function Dest:write_beside(suffix, data)
  local name = self.name .. suffix
  local where = self.base .. "/" .. name
  if self.remote then
    self:client():put(where, data, { if_none_match = true })
  else
    naming.claim(where, data)
  end
  self.beside[#self.beside + 1] = name
  return where
end

-- Writes the manifest (a table, or its text) only if absent: from then on
-- the backup exists. A failure removes the archive, which would otherwise
-- be a backup without its commit marker.
function Dest:commit(m)
  local text = type(m) == "string" and m or manifests.encode(m)
  local ok, err = pcall(self.write_beside, self, naming.MANIFEST_SUFFIX, text)
  if not ok then
    -- (interrupted once it had landed: ours goes first, then the archive)
    self:unclaim(self.name .. naming.MANIFEST_SUFFIX, text)
    self:discard()
    error(err, 0)
  end
  self.committed = true
  return naming.manifest_path(self.path)
end

-- Aborts the unfinished multipart uploads of `name`: its reservation is
-- ours, so any upload of that key is this backup's, such as one whose
-- CreateMultipartUpload was interrupted after the server had made it (the
-- writer never learnt its id). After Ctrl-C too; a failure is a warning.
function Dest:abort_uploads(name)
  local ok, err = pcall(pgvault.uninterrupted, function()
    local c = self:client()
    local url = self.base .. "/" .. name
    local bucket, key = url:match("^(s3://[^/]+)/(.*)$")
    for _, u in ipairs(c:uploads(url)) do
      if u.key == key then
        log.info("aborting the unfinished upload of %s", url)
        c:abort_upload(bucket .. "/" .. u.key, u.upload_id)
      end
    end
  end)
  if not ok then
    log.warn("could not check %s for an unfinished upload (%s); 'pgvault s3 cleanup' or prune removes one", self.to,
      pgvault.is_error(err) and err.message or tostring(err))
  end
end

-- Removes what this destination wrote for an uncommitted backup.
function Dest:discard()
  if self.committed then return end
  if self.remote and self.name then self:abort_uploads(self.name) end
  for _, name in ipairs(self.beside) do self:remove(name) end
  self.beside = {}
  if self.archive_written then self:remove(self.name) end
  self.archive_written = false
end

function Dest:close()
  self:discard()
  if self.reservation then self:remove(self.reservation) end
  self.reservation = nil
  if self._client then self._client:close() end
  self._client = nil
end
Dest.__close = Dest.close

return destination
