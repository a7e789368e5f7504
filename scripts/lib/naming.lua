-- Backup names: DIR/YYYYMMDDHHMMSS_<env>.backup[.zst][.age] (UTC), each with
-- <same>.manifest.json beside it. Building and parsing them in one place.
local naming = {}

naming.MANIFEST_SUFFIX = ".manifest.json"

-- "20261125101830" for a time (seconds since the epoch; now when nil), UTC.
function naming.stamp(t)
  return os.date("!%Y%m%d%H%M%S", t or os.time())
end

-- Seconds since the epoch for a stamp, or nil when it is not one.
function naming.stamp_time(stamp)
  local y, mo, d, hh, mi, ss = tostring(stamp):match("^(%d%d%d%d)(%d%d)(%d%d)(%d%d)(%d%d)(%d%d)$")
  if not y then return nil end
  local fields = { year = tonumber(y), month = tonumber(mo), day = tonumber(d), hour = tonumber(hh),
    min = tonumber(mi), sec = tonumber(ss), isdst = false }
  -- os.time reads local time; shift by this machine's offset from UTC.
  local t = os.time(fields)
  local utc = os.date("!*t", t)
  utc.isdst = false
  return t + (t - os.time(utc))
end

-- "2026-11-25T10:18:30Z"
function naming.iso8601(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", t or os.time())
end

-- Environment names become part of file names: letters, digits, - and _.
function naming.valid_env(env)
  return type(env) == "string" and #env > 0 and #env <= 64 and env:match("^[%w_%-]+$") ~= nil
end

-- File name (no directory) of an archive.
function naming.archive_name(stamp, env, ext)
  assert(naming.valid_env(env), "invalid environment name")
  return string.format("%s_%s.backup%s", stamp, env, ext or "")
end

-- {stamp=, time=, env=, ext=, zst=, age=} for an archive's file name (with or
-- without a directory), or nil for anything else (manifests, .partial files).
function naming.parse(path)
  local name = path:match("([^/]+)$")
  local stamp, env, ext = name:match("^(%d%d%d%d%d%d%d%d%d%d%d%d%d%d)_([%w_%-]+)%.backup(.*)$")
  if not stamp then return nil end
  if ext ~= "" and ext ~= ".zst" and ext ~= ".age" and ext ~= ".zst.age" then return nil end
  return { name = name, stamp = stamp, time = naming.stamp_time(stamp), env = env, ext = ext,
    zst = ext:find(".zst", 1, true) ~= nil, age = ext:find(".age", 1, true) ~= nil }
end

function naming.manifest_path(archive_path)
  return archive_path .. naming.MANIFEST_SUFFIX
end

-- A database name with a suffix, within PostgreSQL's 63-byte identifiers.
function naming.db_with_suffix(db, suffix)
  return db:sub(1, 63 - #suffix) .. suffix
end

return naming
