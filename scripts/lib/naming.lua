-- Backup names: DIR/YYYYMMDDHHMMSS_<env>.backup[.zst][.age] (UTC), each with
-- <same>.manifest.json beside it. A second backup in the same second into
-- the same place is YYYYMMDDHHMMSS-2_<env>…, a third -3, and so on (lib.
-- destination reserves them). Building and parsing them in one place; a
-- name starting with "." (temporary files, reservations) is never a backup.
local naming = {}

naming.MANIFEST_SUFFIX = ".manifest.json"
-- Beside a reserved name while its backup runs (never parsed as a backup).
naming.RESERVATION_SUFFIX = ".reserved"
-- The extensions an archive may have, outermost last.
naming.EXTENSIONS = { "", ".zst", ".age", ".zst.age" }

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

-- "20261125101830_prod", or "20261125101830-2_prod" for seq 2: what every
-- file of one backup starts with.
function naming.stem(stamp, env, seq)
  assert(naming.valid_env(env), "invalid environment name")
  if seq and seq > 1 then return string.format("%s-%d_%s", stamp, seq, env) end
  return string.format("%s_%s", stamp, env)
end

-- File name (no directory) of an archive.
function naming.archive_name(stamp, env, ext, seq)
  return naming.stem(stamp, env, seq) .. ".backup" .. (ext or "")
end

-- {name=, stamp=, seq=, time=, env=, ext=, zst=, age=} for an archive's file
-- name (with or without a directory), or nil for anything else (manifests,
-- temporary files, reservations).
function naming.parse(path)
  local name = path:match("([^/]+)$")
  if not name then return nil end
  local stamp, seq, env, ext = name:match("^(%d%d%d%d%d%d%d%d%d%d%d%d%d%d)(%-?%d*)_([%w_%-]+)%.backup(.*)$")
  if not stamp or not naming.valid_env(env) then return nil end
  if seq ~= "" and not (seq:match("^%-[1-9]%d?%d?%d?$") and seq ~= "-1") then return nil end
  if ext ~= "" and ext ~= ".zst" and ext ~= ".age" and ext ~= ".zst.age" then return nil end
  return { name = name, stamp = stamp, seq = seq == "" and 1 or math.tointeger(-tonumber(seq)),
    time = naming.stamp_time(stamp), env = env, ext = ext, zst = ext:find(".zst", 1, true) ~= nil,
    age = ext:find(".age", 1, true) ~= nil }
end

-- Orders parsed names (naming.parse) newest first: by time stamp, then the
-- sequence number within that second, then by name.
function naming.newer(a, b)
  if a.stamp ~= b.stamp then return a.stamp > b.stamp end
  if (a.seq or 1) ~= (b.seq or 1) then return (a.seq or 1) > (b.seq or 1) end
  return a.name > b.name
end

function naming.manifest_path(archive_path)
  return archive_path .. naming.MANIFEST_SUFFIX
end

-- The reservation beside a stem: ".<stem>.reserved" in the same place.
function naming.reservation_name(stem)
  return "." .. stem .. naming.RESERVATION_SUFFIX
end

-- `s` cut to at most `max` bytes without splitting a UTF-8 character (a
-- string that is not UTF-8 is cut by bytes).
function naming.cut(s, max)
  if #s <= max then return s end
  if not utf8.len(s) then return s:sub(1, max) end
  local keep = 0
  for pos, code in utf8.codes(s) do
    local last = pos + #utf8.char(code) - 1
    if last > max then break end
    keep = last
  end
  return s:sub(1, keep)
end

-- Creates the file `path` holding `data` (mode 0600) only if the name is
-- free: written to a temporary file and linked into place, so a name that
-- is taken, even a moment before, raises kind "exists" and is never replaced.
function naming.claim(path, data)
  require("pgvault.fs").write_file(path, data or "", { mode = 384, no_clobber = true })
  return path
end

-- A database name with a suffix, within PostgreSQL's 63-byte identifiers.
function naming.db_with_suffix(db, suffix)
  return naming.cut(db, 63 - #suffix) .. suffix
end

return naming
