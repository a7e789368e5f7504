-- S3 housekeeping: ls, rm, and cleanup of stale multipart uploads
local cli = require "lib.cli"
local s3cli = require "lib.s3cli"
local pgvault = require "pgvault"
local s3 = require "pgvault.s3"

local o = cli.parse(arg, {
  usage = "pgvault s3 ls|rm|cleanup s3://BUCKET/[PREFIX] [options]",
  summary = "ls       lists objects under the prefix (size, date, key; 'PRE' for sub-prefixes unless\n"
    .. "         --recursive), as 'aws s3 ls' does\n"
    .. "rm       deletes one object, or with --recursive everything in the folder: s3://B/x/prod\n"
    .. "         means x/prod/ (as 'aws s3 rm --recursive'), never x/prod-old.txt or x/production/\n"
    .. "cleanup  aborts multipart uploads of the object or in the folder that were started more\n"
    .. "         than --older-than hours ago (default 24): the leftovers of interrupted uploads,\n"
    .. "         which the store keeps (and bills) until they are aborted",
  options = s3cli.with_options({
    { "recursive", "r", false, "ls: every object, not only this level; rm: everything under the prefix" },
    { "older-than", nil, "HOURS", "cleanup: only uploads started this many hours ago or earlier (default 24)" },
    { "dry-run", "n", false, "cleanup, rm: show what would be removed, remove nothing" },
  }),
  positionals = { { "COMMAND", "ls, rm or cleanup" }, { "URL", "s3://BUCKET/[PREFIX]" } },
})

if not s3cli.is_s3(o.URL) then pgvault.raise("usage", "expected s3://BUCKET/[PREFIX], not '" .. o.URL .. "'") end
-- An option the subcommand would ignore is refused.
local applies = { recursive = { ls = true, rm = true }, dry_run = { rm = true, cleanup = true },
  older_than = { cleanup = true } }
for key, commands in pairs(applies) do
  if o[key] and not commands[o.COMMAND] and (o.COMMAND == "ls" or o.COMMAND == "rm" or o.COMMAND == "cleanup") then
    pgvault.raise("usage", string.format("--%s does not apply to 's3 %s' (see 'pgvault s3 --help')",
      key:gsub("_", "-"), o.COMMAND))
  end
end
local bucket, prefix = s3.parse_url(o.URL)
local client <close> = s3.client(s3cli.opts(o))

-- The folder a prefix names: x/prod -> x/prod/ ("" stays the whole bucket).
local function folder(p)
  if p ~= "" and p:sub(-1) ~= "/" then return p .. "/" end
  return p
end

local function plural(n, word) return string.format("%d %s%s", n, word, n == 1 and "" or "s") end

-- Seconds since the epoch of an S3 timestamp such as 2026-11-25T10:18:30.000Z.
local function epoch(iso)
  local y, mo, d, hh, mi, ss = tostring(iso):match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)")
  if not y then return nil end
  local t = os.time({ year = tonumber(y), month = tonumber(mo), day = tonumber(d), hour = tonumber(hh),
    min = tonumber(mi), sec = tonumber(ss), isdst = false })
  local utc = os.date("!*t", t)
  utc.isdst = false
  return t + (t - os.time(utc))
end

if o.COMMAND == "ls" then
  local objs, prefixes = client:list(o.URL, { delimiter = not o.recursive and "/" or nil })
  for _, p in ipairs(prefixes) do print(string.format("%19s %12s %s", "", "PRE", p)) end
  for _, obj in ipairs(objs) do
    local when = (obj.last_modified or ""):gsub("T", " "):gsub("%.%d+Z$", ""):gsub("Z$", "")
    print(string.format("%19s %12d %s", when, obj.size, obj.key))
  end
elseif o.COMMAND == "rm" then
  if prefix == "" and not o.recursive then pgvault.raise("usage", "name an object, or use --recursive for a prefix") end
  local keys = {}
  local where = "s3://" .. bucket .. "/" .. folder(prefix)
  if o.recursive then
    for _, obj in ipairs(client:list(where)) do keys[#keys + 1] = obj.key end
  else
    keys[1] = prefix
  end
  for _, k in ipairs(keys) do print((o.dry_run and "would delete " or "delete ") .. "s3://" .. bucket .. "/" .. k) end
  if not o.dry_run then
    if o.recursive then
      if #keys > 0 then client:delete_many("s3://" .. bucket .. "/", keys) end
    else
      client:delete(o.URL)
    end
  end
  if o.recursive then
    log.info("%s %s in %s", o.dry_run and "would delete" or "deleted", plural(#keys, "object"), where)
  end
elseif o.COMMAND == "cleanup" then
  local hours = tonumber(o.older_than or "24")
  if not hours or hours < 0 or hours ~= hours or hours == math.huge then
    pgvault.raise("usage", "--older-than needs a number of hours, not '" .. tostring(o.older_than) .. "'")
  end
  local cutoff = os.time() - hours * 3600
  local aborted, kept = 0, 0
  -- The object itself or the folder it names, never x/production/ for x/prod.
  local inside = folder(prefix)
  for _, u in ipairs(client:uploads(o.URL)) do
    if u.key == prefix or u.key:sub(1, #inside) == inside then
      local started = epoch(u.initiated)
      if started and started <= cutoff then
        print(string.format("%s s3://%s/%s (upload %s, started %s)", o.dry_run and "would abort" or "abort",
          bucket, u.key, u.upload_id, u.initiated))
        if not o.dry_run then client:abort_upload("s3://" .. bucket .. "/" .. u.key, u.upload_id) end
        aborted = aborted + 1
      else
        kept = kept + 1
      end
    end
  end
  log.info("%s %s; %s kept", o.dry_run and "would abort" or "aborted", plural(aborted, "stale multipart upload"),
    plural(kept, "newer one"))
else
  pgvault.raise("usage", "unknown command '" .. o.COMMAND .. "': use ls, rm or cleanup (see 'pgvault s3 --help')")
end
