-- covers: scripts/lib/lock.lua
-- lib.lock: one run per environment, in a directory and in a bucket. A
-- second run is refused naming the holder or waits; a holder that crashed
-- on this machine (its pid gone or reused) or whose lock expired is taken
-- over; the lock goes with the run, also on Ctrl-C; a run whose lock was
-- taken over finds out at its next refresh.
local t = require "harness.testing"
local h = require "harness.env"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local s3 = require "pgvault.s3"
local json = require "lib.json"
local lock = require "lib.lock"

local s3opts = require("harness.s3").direct

local BUCKET = require("harness.s3").make_bucket("locks")

-- A destination of each kind, fresh for each test.
local n = 0
local function places()
  n = n + 1
  local dir = h.tmpdir() .. "/backups"
  fs.mkdir_p(dir)
  return { { to = dir }, { to = "s3://" .. BUCKET .. "/t" .. n .. "/", s3 = s3opts() } }
end

local function opts(place, extra)
  local o = { to = place.to, s3 = place.s3, env = "prod", command = "test" }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

local function plant(place, info)
  local store = lock.store(opts(place))
  local text = json.encode(info)
  if store.remote then s3.put(store.path, text, place.s3) else fs.write_file(store.path, text) end
  return store
end

local function exists(store)
  if store.remote then return s3.head(store.path, store.s3) ~= nil end
  return fs.exists(store.path)
end

t.test("a second run is refused naming the holder; after release the lock is free", function()
  for _, place in ipairs(places()) do
    local held = lock.acquire(opts(place))
    t.ok(exists(held.store), place.to .. ": the lock exists")
    local info = json.decode(held.store:read())
    t.eq(info.pid, proc.getpid(), "holder pid")
    t.eq(info.command, "test", "holder command")
    local e = t.raises(function() lock.acquire(opts(place)) end,
      "environment prod is locked by another run: host [^,]+, pid " .. proc.getpid() .. ", test since .* %(expires "
      .. ".*%); wait for it with %-%-wait" .. (place.s3 and ", or if no run is active remove .*%.pgvault%-prod%.lock$"
      or "$"))
    t.eq(e.kind, "exists", "kind")
    t.ok(lock.acquire(opts(place, { env = "staging" })):release() == nil, "another environment is independent")
    held:release()
    t.ok(held.store.take or not exists(held.store), place.to .. ": released (a lock object is deleted)")
    held:release()
    lock.acquire(opts(place)):release()
  end
end)

t.test("a holder gone from this machine (pid gone, pid reused, rebooted) is taken over", function()
  local me = lock.identity()
  local r = proc.spawn({ "true" })
  local dead_pid = r:pid()
  r:wait()
  r:close()
  for _, place in ipairs(places()) do
    for _, info in ipairs({
      { host = me.host, pid = dead_pid, boot = me.boot, start = "1", expires = os.time() + 3600, token = "x" },
      { host = me.host, pid = proc.getpid(), boot = me.boot, start = "1", expires = os.time() + 3600, token = "x" },
      { host = me.host, pid = proc.getpid(), boot = "another-boot", start = me.start, expires = os.time() + 3600,
        token = "x" },
    }) do
      plant(place, info)
      local held = lock.acquire(opts(place))
      t.eq(json.decode(held.store:read()).token, held.info.token, "taken over")
      held:release()
    end
  end
end)

t.test("a directory's lock is the kernel's: what a file says does not hold it, a live flock does", function()
  local place = places()[1]
  plant(place, { host = "elsewhere", pid = 1, expires = os.time() + 3600, started = os.time(), token = "x" })
  local held = lock.acquire(opts(place))
  t.eq(json.decode(held.store:read()).pid, proc.getpid(), "no flock on it: free, and it names us now")
  held.ttl = 1
  held:refresh()
  t.ok(held:ours(), "an flock does not expire: still ours after refresh")
  held:release()
end)

t.test("a holder on another machine: refused until its lock expires, then taken over (bucket)", function()
  for _, place in ipairs({ places()[2] }) do
    plant(place, { host = "elsewhere", pid = 1, expires = os.time() + 3600, started = os.time(), token = "x" })
    t.raises(function() lock.acquire(opts(place)) end, "host elsewhere, pid 1")
    plant(place, { host = "elsewhere", pid = 1, expires = os.time() - 1, started = os.time() - 7200, token = "x" })
    lock.acquire(opts(place)):release()
  end
end)

t.test("an expired lock whose holder still runs on this machine is not taken over (a long step)", function()
  local place = places()[2]
  local me = lock.identity()
  plant(place, { host = me.host, pid = me.pid, boot = me.boot, start = me.start, expires = os.time() - 60,
    started = os.time() - 7200, token = "x", command = "nightly" })
  t.raises(function() lock.acquire(opts(place)) end, "locked by another run: host [^,]+, pid " .. me.pid)
end)

t.test("a directory that does not exist is not created by the lock", function()
  local dir = h.tmpdir() .. "/missing"
  t.raises(function() lock.acquire { to = dir, env = "prod" } end, "cannot lock .*/missing: no such directory")
  t.ok(not fs.exists(dir), "not created")
end)

t.test("refresh pushes the expiry; a run whose lock was taken over finds out (bucket)", function()
  for _, place in ipairs({ places()[2] }) do
    local held = lock.acquire(opts(place, { ttl = 60 }))
    local before = json.decode(held.store:read()).expires
    held.ttl = 7200
    held:refresh()
    t.ok(json.decode(held.store:read()).expires > before + 3600, "expiry pushed")
    plant(place, { host = "elsewhere", pid = 1, expires = os.time() + 3600, token = "other" })
    t.raises(function() held:refresh() end, "is no longer held by this run")
    held:release()
    t.ok(exists(held.store), "release leaves someone else's lock alone")
  end
end)

-- Starts a pgvault child that takes the lock and waits; returns its handle
-- once the lock is held.
local function holder(place, extra_code)
  local d = h.tmpdir()
  h.write(d .. "/hold.lua", string.format([[
    local lock = require "lib.lock"
    local held <close> = lock.acquire { to = %q, env = "prod", command = "holder" }
    print("held")
    io.stdout:flush()
    %s
    require("pgvault.proc").sleep(60)
  ]], place.to, extra_code or ""))
  local handle = proc.spawn({ h.bin, "run", d .. "/hold.lua", env = h.s3().env, stdout = "pipe", stderr = "inherit" })
  t.eq(handle:read_line(30), "held", "the child holds the lock")
  return handle
end

t.test("a crashed holder (SIGKILL) does not block the next run on this machine", function()
  for _, place in ipairs(places()) do
    local handle = holder(place)
    t.raises(function() lock.acquire(opts(place)) end, "pid " .. handle:pid())
    handle:kill("KILL")
    handle:wait(10)
    handle:close()
    lock.acquire(opts(place)):release()
  end
end)

t.test("Ctrl-C: the holder exits 130 and its lock is gone", function()
  for _, place in ipairs(places()) do
    local handle = holder(place)
    local store = lock.store(opts(place))
    t.ok(exists(store), "held")
    handle:kill("INT")
    t.eq(handle:wait(30), 130, "exit code")
    handle:close()
    if place.s3 then
      t.ok(not exists(store), place.to .. ": released on Ctrl-C")
    else
      lock.acquire(opts(place)):release() -- free at once
    end
  end
end)

t.test("--wait: a second run waits for the first to finish, then runs", function()
  for _, place in ipairs(places()) do
    local handle = holder(place, "require('pgvault.proc').sleep(1.5) do return end")
    local saved = lock.POLL_SECONDS
    lock.POLL_SECONDS = 0.2
    local held = lock.acquire(opts(place, { wait = true }))
    lock.POLL_SECONDS = saved
    t.eq(handle:wait(30), 0, "the first run ended normally")
    handle:close()
    t.eq(json.decode(held.store:read()).pid, proc.getpid(), "the waiting run holds it now")
    held:release()
  end
end)
