-- Which backups a retention policy keeps: restic's rules, with restic's
-- meaning (its `forget` policy), applied per database and per suffix:
--
--   keep_last N      the N newest
--   keep_hourly N    the newest of each of the N most recent hours that have a backup
--   keep_daily, keep_weekly (ISO weeks), keep_monthly, keep_yearly: the same per day, week ...
--   keep_within D    every backup within D (1y2m3d4h) of the group's newest
--   keep_within_hourly D ... keep_within_yearly D: the newest of each hour ... year within D
--
-- A count of -1 ("unlimited") keeps one per period without a limit. When a
-- count is not used up, the oldest backup is kept too (the longest history
-- the counts allow). Periods are counted in UTC, as backup names are. No
-- rule at all keeps everything. Whatever the rules say, the newest backup
-- of each group is kept.
local retention = {}

-- ------------------------------------------------------------------------
-- Durations: restic's 1y2m3d4h (years, months, days, hours)
-- ------------------------------------------------------------------------

-- {y=, m=, d=, h=} for "1y2m3d4h" (any of the parts, in that order, each
-- once), or nil and what is wrong.
function retention.parse_duration(s)
  if type(s) ~= "string" then return nil, "a duration is a string like 7d, 12h or 1y6m" end
  local text = s:match("^%s*(.-)%s*$")
  if text == "" then return nil, "an empty duration" end
  local d, order, rest = { y = 0, m = 0, d = 0, h = 0 }, "ymdh", text
  local last = 0
  while rest ~= "" do
    local num, unit, tail = rest:match("^(%d+)([ymdh])(.*)$")
    if not num then
      return nil, string.format("'%s' is not a duration: write numbers with y, m, d or h, as 1y6m or 36h", s)
    end
    local pos = order:find(unit, 1, true)
    if pos <= last then
      return nil, string.format("'%s': give the units once each, in the order y, m, d, h", s)
    end
    last = pos
    d[unit] = math.tointeger(tonumber(num)) or math.maxinteger
    rest = tail
  end
  return d
end

function retention.format_duration(d)
  local out = {}
  for _, u in ipairs({ "y", "m", "d", "h" }) do
    if d[u] ~= 0 then out[#out + 1] = d[u] .. u end
  end
  return #out > 0 and table.concat(out) or "0h"
end

local function zero(d) return not d or (d.y == 0 and d.m == 0 and d.d == 0 and d.h == 0) end

-- Days since 1970-01-01 of a (proleptic Gregorian) date; the day may be
-- out of its month's range (it counts on), as Go's AddDate does.
local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
  return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
end

-- t (seconds since the epoch) minus duration d, in calendar terms (UTC).
function retention.before(t, d)
  local f = os.date("!*t", t)
  local month = f.month - d.m
  local year = f.year - d.y + (month - 1) // 12
  month = (month - 1) % 12 + 1
  local days = days_from_civil(year, month, f.day - d.d)
  return days * 86400 + f.hour * 3600 + f.min * 60 + f.sec - d.h * 3600
end

-- Seconds a duration spans counting back from `now` (a month back from
-- March is 29 days in 2024); raises "usage" naming `flag` when malformed.
function retention.seconds(text, flag, now)
  local d, err = retention.parse_duration(text)
  if not d then require("pgvault").raise("usage", "--" .. flag .. ": " .. err) end
  now = now or os.time()
  return now - retention.before(now, d)
end

-- ------------------------------------------------------------------------
-- Periods (UTC)
-- ------------------------------------------------------------------------

local function iso_week(t)
  local f = os.date("!*t", t)
  local weekday = (f.wday + 5) % 7 + 1 -- Monday 1 .. Sunday 7
  local thursday = os.date("!*t", t + (4 - weekday) * 86400)
  return thursday.year * 100 + (thursday.yday - 1) // 7 + 1
end

local PERIODS = {
  hourly = function(t) return tonumber(os.date("!%Y%m%d%H", t)) end,
  daily = function(t) return tonumber(os.date("!%Y%m%d", t)) end,
  weekly = iso_week,
  monthly = function(t) return tonumber(os.date("!%Y%m", t)) end,
  yearly = function(t) return tonumber(os.date("!%Y", t)) end,
}

retention.COUNTS = { "last", "hourly", "daily", "weekly", "monthly", "yearly" }
retention.WITHINS = { "hourly", "daily", "weekly", "monthly", "yearly" }

-- ------------------------------------------------------------------------
-- Policies
-- ------------------------------------------------------------------------

-- A policy from settings named as the flags (keep_daily = 7, keep_within =
-- "2d" ...; counts may be -1 for unlimited). Raises on a bad duration.
function retention.policy(o)
  local p = { counts = {}, within = nil, within_period = {} }
  for _, name in ipairs(retention.COUNTS) do
    local n = o["keep_" .. name]
    if n ~= nil and n ~= false and n ~= 0 then p.counts[name] = n end
  end
  local function duration(key)
    local v = o[key]
    if v == nil or v == false then return nil end
    local d, err = retention.parse_duration(v)
    if not d then require("pgvault").raise("usage", "--" .. key:gsub("_", "-") .. ": " .. err) end
    return not zero(d) and d or nil
  end
  p.within = duration("keep_within")
  for _, name in ipairs(retention.WITHINS) do p.within_period[name] = duration("keep_within_" .. name) end
  return p
end

function retention.empty(p)
  return next(p.counts) == nil and p.within == nil and next(p.within_period) == nil
end

-- "keep 7 daily, 4 weekly and all within 2d of the newest" (or "keep everything").
function retention.describe(p)
  if retention.empty(p) then return "no keep rules: every backup is kept" end
  local parts = {}
  for _, name in ipairs(retention.COUNTS) do
    local n = p.counts[name]
    if n then parts[#parts + 1] = (n == -1 and "all" or tostring(n)) .. " " .. name end
  end
  for _, name in ipairs(retention.WITHINS) do
    local d = p.within_period[name]
    if d then parts[#parts + 1] = name .. " within " .. retention.format_duration(d) end
  end
  if p.within then parts[#parts + 1] = "all within " .. retention.format_duration(p.within) .. " of the newest" end
  return "keep " .. table.concat(parts, ", ")
end

-- Newest first: by time, then sequence within the second, then name.
local function newer(a, b)
  if a.time ~= b.time then return a.time > b.time end
  if (a.seq or 1) ~= (b.seq or 1) then return (a.seq or 1) > (b.seq or 1) end
  return (a.name or "") > (b.name or "")
end

-- Applies p to one group of backups ({time =, ...}); returns keep (each
-- {backup =, reasons = {...}}) and remove (backups), both newest first.
function retention.apply(list, p, now)
  local sorted = {}
  for i, b in ipairs(list) do sorted[i] = b end
  table.sort(sorted, newer)
  local keep, remove = {}, {}
  if retention.empty(p) then
    for _, b in ipairs(sorted) do keep[#keep + 1] = { backup = b, reasons = { "no keep rules" } } end
    return keep, remove
  end
  now = now or os.time()
  -- The newest backup that is not in the future anchors the durations.
  local latest = 0
  for _, b in ipairs(sorted) do
    if b.time > latest and b.time < now then latest = b.time end
  end
  local counts, last = {}, {}
  for name, n in pairs(p.counts) do counts[name] = n end
  local within_last = {}
  for nr, b in ipairs(sorted) do
    local reasons = {}
    if p.within and b.time > retention.before(latest, p.within) then
      reasons[#reasons + 1] = "within " .. retention.format_duration(p.within)
    end
    for _, name in ipairs(retention.COUNTS) do
      local n = counts[name]
      if n and (n > 0 or n == -1) then
        local val = name == "last" and nr or PERIODS[name](b.time)
        if val ~= last[name] or nr == #sorted then
          last[name] = val
          if n > 0 then counts[name] = n - 1 end
          reasons[#reasons + 1] = name
        end
      end
    end
    for _, name in ipairs(retention.WITHINS) do
      local d = p.within_period[name]
      if d and b.time > retention.before(latest, d) then
        local val = PERIODS[name](b.time)
        if val ~= within_last[name] then
          within_last[name] = val
          reasons[#reasons + 1] = name .. " within " .. retention.format_duration(d)
        end
      end
    end
    if #reasons > 0 then keep[#keep + 1] = { backup = b, reasons = reasons } else remove[#remove + 1] = b end
  end
  return keep, remove
end

-- Applies p to each group (same database and suffix) of complete backups
-- ({time =, name =, env =, database =, ...}) and keeps each group's newest
-- whatever p says. Returns keep ({backup =, reasons =}), remove, newest first.
function retention.plan(backups, p, now)
  local groups, order = {}, {}
  for _, b in ipairs(backups) do
    local key = tostring(b.database) .. "\0" .. tostring(b.env)
    if not groups[key] then
      groups[key] = {}
      order[#order + 1] = key
    end
    table.insert(groups[key], b)
  end
  local keep, remove = {}, {}
  for _, key in ipairs(order) do
    local k, r = retention.apply(groups[key], p, now)
    if r[1] and (not k[1] or newer(r[1], k[1].backup)) then
      local newest = r[1]
      -- Every rule let the newest go: it stays all the same.
      table.remove(r, 1)
      table.insert(k, 1, { backup = newest, reasons = { "newest" } })
    end
    for _, x in ipairs(k) do keep[#keep + 1] = x end
    for _, x in ipairs(r) do remove[#remove + 1] = x end
  end
  table.sort(keep, function(a, b) return newer(a.backup, b.backup) end)
  table.sort(remove, newer)
  return keep, remove
end

return retention
