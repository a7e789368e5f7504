-- One run at a time per environment: a lock beside the backups.
--
--   local lock = require "lib.lock"
--   local held <close> = lock.acquire{ to = DEST, env = "prod", wait = false, ttl = 6 * 3600, s3 = opts }
--   ... held:refresh() between long steps ... (released on close, error or Ctrl-C)
--
-- The lock is DEST/.pgvault-ENV.lock (a name starting with "." is never a
-- backup). In a directory it is an flock(2) on that file (fs.lock): the
-- kernel releases it when its holder ends, even by SIGKILL, so there is
-- nothing to expire; the file names its holder. In a bucket it is an
-- object holding JSON about its holder: host, pid, the boot and the
-- process's start (so a pid reused after a crash or a reboot is not taken
-- for the holder), when it started and when it expires, and a random token.
-- It is created only if absent (a conditional PUT) and read back to check
-- the token; it is stale, and taken over, when its holder ran on this
-- machine and is gone, or when it has expired (a crashed holder elsewhere):
-- refresh() pushes the expiry. A second run fails naming the holder, or
-- waits (wait = true) until the lock is free.
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local pgvault = require "pgvault"
local json = require "lib.json"

local lock = {}

lock.DEFAULT_TTL = 6 * 3600
lock.POLL_SECONDS = 5

local function read_small(path)
  local ok, text = pcall(fs.read_file, path)
  return ok and text:gsub("%s+$", "") or nil
end

-- Who we are, as a lock records it.
function lock.identity()
  local stat = read_small("/proc/self/stat") or ""
  local after_comm = stat:match("^%d+ %b() (.*)$") or ""
  local fields = {}
  for f in after_comm:gmatch("%S+") do fields[#fields + 1] = f end
  return {
    host = read_small("/proc/sys/kernel/hostname") or "unknown",
    pid = proc.getpid(),
    boot = read_small("/proc/sys/kernel/random/boot_id"),
    start = fields[20], -- field 22 of stat: start time in clock ticks since boot
  }
end

-- Whether the process recorded in `info` certainly no longer runs: it ran
-- in this boot of this machine, and its pid is gone or is another process
-- (another start time).
function lock.process_gone(info, me)
  me = me or lock.identity()
  if type(info) ~= "table" or info.host ~= me.host or not info.boot or info.boot ~= me.boot then return false end
  local pid = math.tointeger(info.pid)
  if not pid then return false end
  local stat = read_small("/proc/" .. pid .. "/stat")
  if not stat then return true end
  local fields = {}
  for f in (stat:match("^%d+ %b() (.*)$") or ""):gmatch("%S+") do fields[#fields + 1] = f end
  return info.start ~= nil and fields[20] ~= info.start
end

-- Whether the holder recorded in `info` certainly no longer runs: it ran on
-- this machine (same host) and the machine rebooted since, or its process
-- is gone (lock.process_gone).
function lock.holder_gone(info, me)
  me = me or lock.identity()
  if type(info) ~= "table" or info.host ~= me.host then return false end
  if info.boot and me.boot and info.boot ~= me.boot then return true end -- rebooted since
  return lock.process_gone(info, me)
end

local function random_token()
  local f = assert(io.open("/dev/urandom", "rb"))
  local bytes = f:read(12)
  f:close()
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- What a claim records (a backup's name reservation, lib.destination): its
-- holder as a lock records it, the time, and a token unique to the claim,
-- as JSON; prune reads it back (lock.claimant) to tell a claim whose
-- process is gone from one in flight.
function lock.claim_note(what)
  local me = lock.identity()
  return json.encode { what = what, tool = "pgvault " .. tostring(pgvault.version), host = me.host, boot = me.boot,
    pid = me.pid, start = me.start, token = random_token(), at = os.date("!%Y-%m-%dT%H:%M:%SZ") } .. "\n"
end

-- The holder a claim note (or a lock) records, or nil when the text is not one.
function lock.claimant(text)
  local ok, info = pcall(json.decode, text or "")
  if ok and type(info) == "table" and info.host and info.pid then return info end
  return nil
end

function lock.describe(info)
  if type(info) ~= "table" then return "an unreadable lock" end
  return string.format("host %s, pid %s, %s since %s (expires %s)", tostring(info.host), tostring(info.pid),
    tostring(info.command or "a run"), os.date("!%Y-%m-%d %H:%M:%SZ", tonumber(info.started) or 0),
    os.date("!%Y-%m-%d %H:%M:%SZ", tonumber(info.expires) or 0))
end

-- ------------------------------------------------------------------------
-- Where the lock lives: a file or an object
-- ------------------------------------------------------------------------

-- A directory: fs.lock. take() returns the held handle, or nil and the
-- holder's line (what it wrote into the file).
local FileStore = {}
FileStore.__index = FileStore

function FileStore:take(text, wait)
  self.handle, self.holder = fs.lock(self.path, { wait = wait, info = text })
  return self.handle ~= nil
end
function FileStore:read() return read_small(self.path) end

local BucketStore = {}
BucketStore.__index = BucketStore

function BucketStore:client()
  self.c = self.c or require("pgvault.s3").client(self.s3)
  return self.c
end
function BucketStore:create(text)
  local c = self:client()
  -- The read spares a write when the lock is plainly taken (a GET rather
  -- than a HEAD: a refusal then says why, e.g. SignatureDoesNotMatch); the
  -- conditional PUT decides a race between two runs.
  if self:read() then return false end
  local ok, err = pcall(c.put, c, self.path, text, { content_type = "application/json", if_none_match = true })
  if ok then return true end
  if pgvault.is_error(err) and (err.kind == "exists" or err.http_status == 412) then return false end
  error(err, 0)
end
function BucketStore:read()
  local c = self:client()
  local ok, text = pcall(c.get, c, self.path)
  if ok then return text end
  if pgvault.is_error(text) and (text.http_status == 404 or text.code == "NoSuchKey") then return nil end
  error(text, 0)
end
function BucketStore:replace(text)
  self:client():put(self.path, text, { content_type = "application/json" })
end
function BucketStore:remove() self:client():delete(self.path) end

-- The store for a destination (a directory, file:///..., or s3://).
function lock.store(o)
  local env = o.env or "local"
  local name = ".pgvault-" .. env .. ".lock"
  local to = o.to or "db_backups"
  if to:sub(1, 5) == "s3://" then
    local prefix = to:gsub("/+$", "")
    return setmetatable({ path = prefix .. "/" .. name, s3 = o.s3, remote = true }, BucketStore)
  end
  to = to:gsub("^file://", ""):gsub("/+$", "")
  local st = fs.stat(to)
  if not st or st.type ~= "dir" then
    pgvault.raise("io", string.format("cannot lock %s: %s: check the destination (DEST, --to or the environment's "
      .. "to)", to, st and "not a directory" or "no such directory"), { path = to })
  end
  return setmetatable({ path = to .. "/" .. name }, FileStore)
end

-- ------------------------------------------------------------------------
-- Acquiring, refreshing, releasing
-- ------------------------------------------------------------------------

local Held = {}
Held.__index = Held

local function record(self)
  local info = {}
  for k, v in pairs(self.info) do info[k] = v end
  info.expires = os.time() + self.ttl
  return info, json.encode(info)
end

-- Whether the lock is still ours (the token it holds; an flock is ours
-- while we hold it).
function Held:ours()
  if self.store.handle then return self.store.handle:held() end
  local text = self.store:read()
  local ok, info = pcall(json.decode, text or "")
  return ok and type(info) == "table" and info.token == self.info.token
end

-- Pushes the expiry forward; fails when the lock is no longer ours.
function Held:refresh()
  if self.released then return end
  if not self:ours() then
    pgvault.raise("exists", "the lock " .. self.store.path .. " is no longer held by this run (taken over after "
      .. "it expired?): stopping", { path = self.store.path })
  end
  if self.store.handle then return end -- an flock does not expire
  local info, text = record(self)
  self.store:replace(text)
  self.info = info
end

-- Removes the lock if it is still ours. Runs even after Ctrl-C.
function Held:release()
  if self.released then return end
  self.released = true
  local ok, err = pcall(pgvault.uninterrupted, function()
    if self.store.handle then
      self.store.handle:close() -- the file stays: removing it would race with a waiting run
    elseif self:ours() then
      self.store:remove()
    end
  end)
  if not ok then log.warn("could not release the lock %s (%s): the next run will take it once it expires",
    self.store.path, tostring(err)) end
end

Held.__close = Held.release

-- One attempt: the lock, or nil and the holder's info (or text).
-- What a lock records about its holder.
function lock.info(me, o)
  return { host = me.host, pid = me.pid, boot = me.boot, start = me.start, started = os.time(),
    token = random_token(), env = o.env, command = o.command }
end

local function try(store, me, o)
  local info = lock.info(me, o)
  local held = setmetatable({ store = store, ttl = o.ttl or lock.DEFAULT_TTL, info = info }, Held)
  local _, text = record(held)
  if store.take then
    if store:take(text, false) then return held end
    local ok, holder = pcall(json.decode, store.holder or "")
    return nil, ok and type(holder) == "table" and holder or { unreadable = store.holder or "" }
  end
  if store:create(text) then
    if held:ours() then return held end
    return nil, nil -- lost a race between the conditional write and the read back
  end
  local current = store:read()
  if not current then return nil, nil end -- released meanwhile: try again
  local ok, holder = pcall(json.decode, current)
  if not ok or type(holder) ~= "table" then holder = { unreadable = current } end
  -- Expired is stale unless the holder runs on this machine, where we can
  -- see that it is alive (a long step: it refreshes between steps).
  local here = holder.host == me.host and holder.boot ~= nil and holder.boot == me.boot
  local expired = tonumber(holder.expires) and tonumber(holder.expires) < os.time()
  local stale = lock.holder_gone(holder, me) or (expired and not here)
  if stale and not holder.unreadable then
    -- Take it over only if it is still that same stale lock.
    if store:read() == current then
      log.warn("taking over the stale lock %s of %s", store.path, lock.describe(holder))
      store:remove()
    end
    return nil, nil
  end
  return nil, holder
end

-- o: to, env, wait, ttl (seconds), s3 (options), command (for messages).
function lock.acquire(o)
  local store = lock.store(o)
  local me = lock.identity()
  local announced = false
  local attempts = 0
  while true do
    attempts = attempts + 1
    local held, holder = try(store, me, o)
    if held then return held end
    if holder then
      local who = holder.unreadable and ("an unreadable lock (" .. tostring(holder.unreadable):sub(1, 80) .. ")")
        or lock.describe(holder)
      if not o.wait then
        pgvault.raise("exists", string.format("environment %s is locked by another run: %s; wait for it with "
          .. "--wait%s", o.env or "local", who, store.take and "" or (", or if no run is active remove "
          .. store.path)), { path = store.path, holder = holder })
      end
      if not announced then
        log.info("waiting for the lock %s held by %s", store.path, who)
        announced = true
      end
      if store.take then
        -- An flock: the kernel wakes us when it is free (Ctrl-C still stops the wait).
        local _, text = record(setmetatable({ ttl = o.ttl or lock.DEFAULT_TTL, info = lock.info(me, o) }, Held))
        if store:take(text, true) then
          return setmetatable({ store = store, ttl = o.ttl or lock.DEFAULT_TTL, info = json.decode(text) }, Held)
        end
      else
        proc.sleep(lock.POLL_SECONDS)
      end
    elseif attempts > 20 then
      pgvault.raise("exists", "cannot take the lock " .. store.path .. ": it keeps changing hands",
        { path = store.path })
    end
  end
end

return lock
