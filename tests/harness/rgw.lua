-- A throwaway Ceph cluster whose RADOS Gateway is the suite's S3 server:
-- one monitor, one OSD on memstore (objects in RAM, capped), no manager,
-- radosgw on a random loopback port, and one S3 user whose keys
-- radosgw-admin makes up. Every file lives under one directory; every
-- daemon is killed by stop() and, should the process that started it die
-- first, by the kernel (setpriv --pdeathsig).
local cjson = require "cjson"
local fs = require "pgvault.fs"
local proc = require "pgvault.proc"
local s3 = require "pgvault.s3"

local rgw = {}

local PROGRAMS = { "ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "osdmaptool" }
local MEMSTORE_BYTES = 4 << 30

-- The settings a one-OSD cluster needs to come up in seconds: no
-- authentication (with crc messengers, else radosgw loops on an auth
-- error), quick Paxos rounds and client ticks (else each pool creation
-- waits a second and clients notice the OSD 5 s late), single-replica
-- pools with few placement groups.
local CONF = [[
[global]
fsid = %s
mon host = v2:127.0.0.1:%d
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
ms client mode = crc
paxos propose interval = 0.01
objecter tick interval = 0.1
client mount timeout = 20
mon data avail warn = 0
mon data avail crit = 0
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd objectstore = memstore
memstore device bytes = %d
run dir = %s
admin socket = %s/$name.asok
log file = %s/$name.log
pid file = %s/$name.pid
crash dir = %s/crash
mon data = %s/mon
osd data = %s/osd
mon cluster log file = %s/cluster.log
[client.rgw]
rgw thread pool size = 64
rgw data = %s/rgw
]]

local function must(r, what, dir)
  if r.code ~= 0 then
    error(string.format("%s failed (exit %s): %s%s (logs in %s)", what, tostring(r.code), r.stderr, r.stdout, dir), 3)
  end
  return r
end

local function run(argv, timeout)
  local spec = {}
  for i, a in ipairs(argv) do spec[i] = a end
  spec.timeout = timeout or 60
  return proc.run(spec)
end

local function uuid()
  return (fs.read_file("/proc/sys/kernel/random/uuid"):gsub("%s", ""))
end

-- A daemon in the foreground that dies with us; its own output goes to
-- dir/NAME.out (the daemons log to files of their own too).
local function daemon(dir, name, argv)
  local spec = { "setpriv", "--pdeathsig", "KILL", "--", "sh", "-c", 'exec "$@" >"$0" 2>&1',
    dir .. "/" .. name .. ".out" }
  for _, a in ipairs(argv) do spec[#spec + 1] = a end
  spec.stdout, spec.stderr = "inherit", "inherit"
  return proc.spawn(spec)
end

local function tail(path)
  if not fs.exists(path) then return "" end
  local text = fs.read_file(path)
  return text:sub(-1500)
end

-- Creates the monitor's and the OSD's stores in dir for a monitor on port.
local function make_cluster(dir, port)
  fs.mkdir_p(dir .. "/mon")
  fs.mkdir_p(dir .. "/osd")
  fs.mkdir_p(dir .. "/rgw")
  local fsid = uuid()
  local conf = dir .. "/ceph.conf"
  fs.write_file(conf, string.format(CONF, fsid, port, MEMSTORE_BYTES, dir, dir, dir, dir, dir, dir, dir, dir, dir))
  must(run({ "monmaptool", "-c", conf, "--create", "--fsid", fsid, "--addv", "a",
    string.format("[v2:127.0.0.1:%d]", port), dir .. "/monmap" }), "monmaptool", dir)
  must(run({ "osdmaptool", "-c", conf, "--createsimple", "1", "--clobber", dir .. "/osdmap" }), "osdmaptool", dir)
  must(run({ "ceph-mon", "-c", conf, "--mkfs", "-i", "a", "--monmap", dir .. "/monmap", "--osdmap",
    dir .. "/osdmap" }), "ceph-mon --mkfs", dir)
  must(run({ "ceph-osd", "-c", conf, "-i", "0", "--mkfs", "--no-mon-config" }), "ceph-osd --mkfs", dir)
  return conf
end

-- Waits until radosgw answers an S3 request (a HEAD of a key in a bucket
-- that does not exist: 404) or dies.
local function wait_for_gateway(handle, desc, deadline)
  local probe = s3.client { endpoint_url = desc.endpoint, region = desc.region, access_key_id = desc.access_key,
    secret_access_key = desc.secret_key, max_attempts = 1, timeout = 5 }
  while proc.now() < deadline do
    if not handle:running() then return false, "radosgw exited" end
    if pcall(probe.head, probe, "s3://pgvault-probe/x") then
      probe:close()
      return true
    end
    proc.sleep(0.05)
  end
  probe:close()
  return false, "radosgw did not answer in time"
end

local function stop_all(handles)
  for i = #handles, 1, -1 do
    handles[i]:kill("KILL")
    handles[i]:close()
    handles[i] = nil
  end
end

-- One attempt with random ports; nil and why when a port was taken.
local function try_start(dir)
  local mon_port, gw_port = math.random(10000, 19999), math.random(10000, 19999)
  local conf = make_cluster(dir, mon_port)
  local handles = {}
  local ok, res, why = pcall(function()
    handles[1] = daemon(dir, "mon", { "ceph-mon", "-c", conf, "-i", "a", "-f" })
    handles[2] = daemon(dir, "osd", { "ceph-osd", "-c", conf, "-i", "0", "-f" })
    handles[3] = daemon(dir, "rgw", { "radosgw", "-c", conf, "-n", "client.rgw", "-f",
      "--rgw-frontends", string.format("beast endpoint=127.0.0.1:%d", gw_port) })
    -- radosgw-admin makes the user's keys; no secret passes through argv.
    local r = run({ "radosgw-admin", "-c", conf, "user", "create", "--uid", "pgvault-test",
      "--display-name", "pgvault test" }, 60)
    if r.code ~= 0 then
      if not handles[1]:running() then return nil, "ceph-mon exited: " .. tail(dir .. "/mon.a.log") end
      must(r, "radosgw-admin user create", dir)
    end
    local user = cjson.decode(r.stdout)
    local desc = {
      endpoint = "http://127.0.0.1:" .. gw_port, port = gw_port, region = "us-east-1",
      access_key = user.keys[1].access_key, secret_key = user.keys[1].secret_key, dir = dir, conf = conf,
      user = "pgvault-test",
    }
    local up, err = wait_for_gateway(handles[3], desc, proc.now() + 60)
    if not up then return nil, err .. ": " .. tail(dir .. "/client.rgw.log") end
    return desc
  end)
  if not ok or not res then stop_all(handles) end
  if not ok then error(res, 0) end
  return res, why, handles
end

-- Starts the cluster under base/s3; returns the description and a stop
-- function (idempotent).
function rgw.start(base)
  for _, p in ipairs(PROGRAMS) do
    if run({ "sh", "-c", 'command -v "$1" >/dev/null', "sh", p }).code ~= 0 then
      error(p .. " is missing: run 'make deps' (it installs ceph-mon, ceph-osd and radosgw)", 2)
    end
  end
  local why
  for attempt = 1, 4 do
    local dir = string.format("%s/s3/%d", base, attempt)
    local desc, err, handles = try_start(dir)
    if desc then
      local stopped = false
      return desc, function()
        if stopped then return end
        stopped = true
        stop_all(handles)
      end
    end
    why = err
    pcall(fs.remove_tree, dir)
  end
  error("could not start the Ceph RADOS Gateway: " .. tostring(why), 2)
end

-- Runs radosgw-admin on the cluster described by desc (tests: suspend a
-- user, remove a key); returns the decoded JSON answer, or "" when none.
function rgw.admin(desc, args)
  local argv = { "radosgw-admin", "-c", desc.conf }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r = run(argv, 60)
  if r.code ~= 0 then error("radosgw-admin " .. table.concat(args, " ") .. " failed: " .. r.stderr, 2) end
  if r.stdout:match("^%s*$") then return "" end
  return cjson.decode(r.stdout)
end

return rgw
