-- covers: scripts/lib/retention.lua
-- lib.retention: restic's keep rules with restic's meaning (periods in UTC,
-- ISO weeks, the oldest kept while counts are left, durations measured
-- from the newest backup, calendar arithmetic as Go's AddDate), per
-- database and suffix, and the newest backup of each group always kept.
local t = require "harness.testing"
local retention = require "lib.retention"

-- Seconds since the epoch of a UTC date.
local function utc(y, m, d, hh, mm)
  local days = 0
  for year = 1970, y - 1 do days = days + ((year % 4 == 0 and (year % 100 ~= 0 or year % 400 == 0)) and 366 or 365) end
  local months = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
  if y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0) then months[2] = 29 end
  for i = 1, m - 1 do days = days + months[i] end
  return (days + d - 1) * 86400 + (hh or 0) * 3600 + (mm or 0) * 60
end

local function day(s) return os.date("!%Y-%m-%d %H:%M", s) end

-- One backup a day at 10:00 from 2024-01-01 to 2024-03-10 (a Sunday).
local function daily_backups(extra)
  local list = {}
  for i = 0, 69 do
    local time = utc(2024, 1, 1, 10) + i * 86400
    list[#list + 1] = { time = time, name = day(time), database = "app", env = "prod" }
  end
  for _, x in ipairs(extra or {}) do list[#list + 1] = x end
  return list
end

local function kept(list, o, now)
  local keep = retention.apply(list, retention.policy(o), now or utc(2024, 3, 11))
  local out = {}
  for i, k in ipairs(keep) do out[i] = day(k.backup.time) end
  return out, keep
end

t.test("durations: restic's 1y2m3d4h, each unit once and in order", function()
  t.eq(retention.parse_duration("1y2m3d4h"), { y = 1, m = 2, d = 3, h = 4 })
  t.eq(retention.parse_duration(" 36h "), { y = 0, m = 0, d = 0, h = 36 })
  t.eq(retention.format_duration(retention.parse_duration("2d12h")), "2d12h")
  for _, bad in ipairs({ "", "7", "d", "7w", "1d2y", "1h1h", "-1d", "1.5d", "7 d" }) do
    t.eq(retention.parse_duration(bad), nil, "refused: " .. bad)
  end
end)

t.test("calendar arithmetic: months and years as Go's AddDate (Mar 31 - 1m = Mar 2 in 2024)", function()
  local d = retention.parse_duration
  t.eq(day(retention.before(utc(2024, 3, 31, 12), d("1m"))), "2024-03-02 12:00", "Feb 31 counts on")
  t.eq(day(retention.before(utc(2024, 1, 15), d("1m"))), "2023-12-15 00:00", "across the year")
  t.eq(day(retention.before(utc(2024, 2, 29), d("1y"))), "2023-03-01 00:00", "Feb 29 a year back")
  t.eq(day(retention.before(utc(2024, 3, 1, 1), d("2d3h"))), "2024-02-27 22:00", "days and hours")
end)

t.test("keep_last, keep_daily (the newest of each day), unlimited", function()
  t.eq(kept(daily_backups(), { keep_last = 3 }), { "2024-03-10 10:00", "2024-03-09 10:00", "2024-03-08 10:00" })
  local extra = { { time = utc(2024, 3, 10, 22), name = "late", database = "app", env = "prod" },
    { time = utc(2024, 3, 9, 23, 59), name = "late2", database = "app", env = "prod" } }
  t.eq(kept(daily_backups(extra), { keep_daily = 3 }), { "2024-03-10 22:00", "2024-03-09 23:59", "2024-03-08 10:00" },
    "the newest of each day")
  t.eq(#kept(daily_backups(), { keep_daily = -1 }), 70, "unlimited: one a day, all days")
end)

t.test("keep_weekly counts ISO weeks (Monday to Sunday), keep_monthly months", function()
  t.eq(kept(daily_backups(), { keep_weekly = 3 }), { "2024-03-10 10:00", "2024-03-03 10:00", "2024-02-25 10:00" })
  t.eq(kept(daily_backups(), { keep_monthly = 2 }), { "2024-03-10 10:00", "2024-02-29 10:00" })
end)

t.test("ISO weeks across the year: 2020-12-31 and 2021-01-03 share week 53; 2019-12-30 is 2020's week 1", function()
  local list = {}
  for _, d in ipairs({ { 2019, 12, 29 }, { 2019, 12, 30 }, { 2020, 12, 31 }, { 2021, 1, 3 }, { 2021, 1, 4 } }) do
    local time = utc(d[1], d[2], d[3], 12)
    list[#list + 1] = { time = time, name = day(time) }
  end
  t.eq(kept(list, { keep_weekly = 3 }, utc(2021, 2, 1)), { "2021-01-04 12:00", "2021-01-03 12:00",
    "2019-12-30 12:00" })
end)

t.test("the oldest backup is kept while a count is not used up (longest history)", function()
  t.eq(kept(daily_backups(), { keep_monthly = 12 }), { "2024-03-10 10:00", "2024-02-29 10:00", "2024-01-31 10:00",
    "2024-01-01 10:00" })
  t.eq(kept(daily_backups(), { keep_monthly = 3 }), { "2024-03-10 10:00", "2024-02-29 10:00", "2024-01-31 10:00" },
    "counts used up: the oldest goes")
end)

t.test("keep_within: strictly after the newest minus the duration, measured from the newest", function()
  t.eq(kept(daily_backups(), { keep_within = "2d" }), { "2024-03-10 10:00", "2024-03-09 10:00" })
  -- Measured from the newest backup, not from now: a month later nothing changes.
  t.eq(kept(daily_backups(), { keep_within = "2d" }, utc(2024, 4, 10)), { "2024-03-10 10:00", "2024-03-09 10:00" })
  t.eq(#kept(daily_backups(), { keep_within = "1m" }), 29, "Feb 10 10:00 .. Mar 10")
end)

t.test("keep_within_daily and reasons for each backup", function()
  local extra = { { time = utc(2024, 3, 10, 22), name = "late", database = "app", env = "prod" } }
  local out, keep = kept(daily_backups(extra), { keep_within_daily = "3d", keep_last = 1 })
  t.eq(out, { "2024-03-10 22:00", "2024-03-09 10:00", "2024-03-08 10:00" })
  t.eq(keep[1].reasons, { "last", "daily within 3d" })
  t.eq(keep[2].reasons, { "daily within 3d" })
end)

t.test("combined rules; no rule keeps everything; a future backup does not anchor the durations", function()
  local out = kept(daily_backups(), { keep_daily = 2, keep_weekly = 2, keep_monthly = 2 })
  t.eq(out, { "2024-03-10 10:00", "2024-03-09 10:00", "2024-03-03 10:00", "2024-02-29 10:00" })
  local all, keep = kept(daily_backups(), {})
  t.eq(#all, 70, "empty policy")
  t.eq(keep[1].reasons, { "no keep rules" })
  t.eq(retention.describe(retention.policy({})), "no keep rules: every backup is kept")
  t.eq(retention.describe(retention.policy({ keep_daily = 7, keep_weekly = -1, keep_within = "2d" })),
    "keep 7 daily, all weekly, all within 2d of the newest")
  local future = { { time = utc(2030, 1, 1), name = "future" } }
  t.eq(#kept(daily_backups(future), { keep_within = "2d" }), 3, "anchored on Mar 10, the future one kept too")
end)

t.test("plan: per database and per suffix; each group's newest is kept whatever the rules say", function()
  local list = {}
  for _, g in ipairs({ { "app", "prod" }, { "app", "staging" }, { "crm", "prod" } }) do
    for i = 0, 4 do
      list[#list + 1] = { time = utc(2024, 3, 1 + i, 10), name = g[1] .. g[2] .. i, database = g[1], env = g[2] }
    end
  end
  local keep, remove = retention.plan(list, retention.policy({ keep_last = 2 }), utc(2024, 4, 1))
  t.eq(#keep, 6, "two per group")
  t.eq(#remove, 9, "three per group")
  local groups = {}
  for _, k in ipairs(keep) do groups[k.backup.database .. "/" .. k.backup.env] = (groups[k.backup.database .. "/"
    .. k.backup.env] or 0) + 1 end
  t.eq(groups, { ["app/prod"] = 2, ["app/staging"] = 2, ["crm/prod"] = 2 })
  -- The safety net: a policy under which the newest would go (a zero
  -- duration keeps only what is newer than the newest) still keeps it.
  local p = retention.policy({})
  p.within = { y = 0, m = 0, d = 0, h = 0 }
  local k2, r2 = retention.plan({ list[1], list[2], list[3] }, p, utc(2024, 4, 1))
  t.eq(#k2, 1, "one kept")
  t.eq(k2[1].backup, list[3], "the newest")
  t.eq(k2[1].reasons, { "newest" })
  t.eq(#r2, 2, "the others removed")
end)

t.test("policy from settings: 0 means unused, bad durations are usage errors", function()
  local p = retention.policy({ keep_daily = 0, keep_last = 3, keep_within = "0d" })
  t.eq(p.counts, { last = 3 })
  t.eq(p.within, nil)
  t.raises(function() retention.policy({ keep_within = "2w" }) end, "%-%-keep%-within: '2w' is not a duration")
end)
