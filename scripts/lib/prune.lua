-- What `pgvault prune` (and the nightly run's prune step) does to a
-- destination, a directory or a bucket prefix, in three steps:
--
--   local inv = prune.inventory(dest, s3opts)     -- one listing pass (+ the multipart uploads)
--   local plan = prune.plan(inv, policy, { grace = seconds, now = t })
--   prune.apply(plan, inv)                        -- manifests first, then signatures and archives
--
-- A backup is complete when its manifest is there; complete backups are
-- kept or removed by the retention policy (lib.retention), per suffix (the
-- environment, with the database in it for --all-databases), and each
-- group's newest is kept whatever the rules say; its manifest is read to
-- make sure it is one (a damaged newest manifest is left alone and does
-- not count; with trusted keys, nor does one they did not sign). Removing
-- a backup deletes its manifest first, so that a backup pruned half-way
-- is never "latest". Archives without a manifest, temporary files
-- (.NAME.RANDOM.partial), stale reservations and stale
-- multipart uploads are removed once older than the grace period (an
-- upload may be in flight); a young reservation, or one whose holder still
-- runs on this machine, protects its backup (archive, temporary files,
-- upload) whatever the grace; one whose process ran on this machine and
-- is gone goes at once, with what its backup left (lib.lock).
local fs = require "pgvault.fs"
local pgvault = require "pgvault"
local lock = require "lib.lock"
local manifest = require "lib.manifest"
local naming = require "lib.naming"
local retention = require "lib.retention"

local prune = {}

prune.DEFAULT_GRACE = "24h"
prune.BATCH = 250
local SIG_SUFFIX = naming.MANIFEST_SUFFIX .. ".minisig"

local function is_s3(dest) return type(dest) == "string" and dest:sub(1, 5) == "s3://" end

-- "2024-03-10T10:00:00.000Z" (S3 LastModified) -> seconds since the epoch.
local function iso_time(s)
  local y, mo, d, hh, mi, ss = tostring(s):match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)")
  if not y then return nil end
  return naming.stamp_time(string.format("%04d%02d%02d%02d%02d%02d", y, mo, d, hh, mi, ss))
end

-- ------------------------------------------------------------------------
-- Inventory: one pass over the destination
-- ------------------------------------------------------------------------

-- Entries {name, path, size, mtime} of a directory (regular files only).
local function list_dir(dir)
  local st = fs.stat(dir)
  if not st or st.type ~= "dir" then
    pgvault.raise("io", string.format("cannot prune %s: %s: check the destination (DEST, --to or the environment's "
      .. "to)", dir, st and "not a directory" or "no such directory"))
  end
  local out = {}
  for _, name in ipairs(fs.listdir(dir)) do
    local path = dir .. "/" .. name
    local fst = fs.stat(path, true)
    if fst and fst.type == "file" then
      out[#out + 1] = { name = name, path = path, size = fst.size, mtime = fst.mtime }
    end
  end
  return out
end

-- Entries of a bucket prefix (one level), and its multipart uploads.
local function list_bucket(client, dest, uploads_opts)
  local s3 = require "pgvault.s3"
  local bucket, prefix = s3.parse_url(dest)
  if prefix ~= "" and prefix:sub(-1) ~= "/" then prefix = prefix .. "/" end
  local base = "s3://" .. bucket .. "/"
  local out = {}
  for _, obj in ipairs(client:list(base .. prefix, { delimiter = "/" })) do
    local name = obj.key:sub(#prefix + 1)
    if name ~= "" and not name:find("/", 1, true) then
      out[#out + 1] = { name = name, path = base .. obj.key, key = obj.key, size = obj.size,
        mtime = iso_time(obj.last_modified) }
    end
  end
  -- Cleaning up unfinished uploads is a chore, not the prune: a server
  -- that cannot list them (s3rver answers 501) or a failure here is a
  -- warning, with few retries, and the prune goes on.
  local uploads = {}
  local lister <close> = require("pgvault.s3").client(uploads_opts)
  local ok, listed = pcall(lister.uploads, lister, base .. prefix)
  if not ok then
    log.warn("cannot list the unfinished multipart uploads of %s (%s): stale uploads are not cleaned this time",
      dest, pgvault.is_error(listed) and listed.message or tostring(listed))
    listed = {}
  end
  for _, u in ipairs(listed) do
    local name = u.key:sub(#prefix + 1)
    if not name:find("/", 1, true) and (naming.parse(name) or name:sub(1, 1) == ".") then
      uploads[#uploads + 1] = { name = name, key = u.key, upload_id = u.upload_id, path = base .. u.key,
        mtime = iso_time(u.initiated) }
    end
  end
  return out, uploads, base
end

-- Sorts entries into backups (archive + manifest + signature), strays
-- (manifests or signatures without their archive), temporaries and
-- reservations.
local function classify(entries)
  local by_name, backups, strays, temporaries, reservations = {}, {}, {}, {}, {}
  for _, e in ipairs(entries) do by_name[e.name] = e end
  local globals = require "lib.globals"
  for _, e in ipairs(entries) do
    local b = naming.parse(e.name) or globals.parse(e.name)
    if b then
      -- The roles of a run are a group of their own, pruned by the same rules.
      if b.globals then b.database = "(roles and grants)" end
      b.path, b.size, b.mtime, b.key = e.path, e.size, e.mtime, e.key
      b.manifest_entry = by_name[e.name .. naming.MANIFEST_SUFFIX]
      b.signature_entry = by_name[e.name .. SIG_SUFFIX]
      backups[#backups + 1] = b
    elseif e.name:sub(-#SIG_SUFFIX) == SIG_SUFFIX then
      if not by_name[e.name:sub(1, -#SIG_SUFFIX - 1)] then strays[#strays + 1] = e end
    elseif e.name:sub(-#naming.MANIFEST_SUFFIX) == naming.MANIFEST_SUFFIX then
      if not by_name[e.name:sub(1, -#naming.MANIFEST_SUFFIX - 1)] then strays[#strays + 1] = e end
    elseif e.name:match("^%..+%.partial$") then
      temporaries[#temporaries + 1] = e
    elseif e.name:sub(1, 1) == "." and e.name:sub(-#naming.RESERVATION_SUFFIX) == naming.RESERVATION_SUFFIX then
      e.stem = e.name:sub(2, -#naming.RESERVATION_SUFFIX - 1)
      reservations[#reservations + 1] = e
    end
  end
  return backups, strays, temporaries, reservations
end

-- { dest, remote, backups, strays, temporaries, reservations, uploads, client }
function prune.inventory(dest, s3opts)
  local inv = { dest = dest, remote = is_s3(dest), uploads = {} }
  local entries
  if inv.remote then
    inv.client = require("pgvault.s3").client(s3opts)
    local uploads_opts = { max_attempts = 2 }
    for k, v in pairs(s3opts or {}) do if k ~= "max_attempts" then uploads_opts[k] = v end end
    entries, inv.uploads, inv.base = list_bucket(inv.client, dest, uploads_opts)
  else
    inv.dir = dest:gsub("^file://", ""):gsub("/+$", "")
    if inv.dir == "" then inv.dir = "/" end
    entries = list_dir(inv.dir)
  end
  inv.backups, inv.strays, inv.temporaries, inv.reservations = classify(entries)
  return inv
end

local function read_entry(inv, e)
  if inv.remote then return pcall(inv.client.get, inv.client, e.path) end
  return pcall(fs.read_file, e.path)
end

-- The manifest of backup b, read and checked, or nil and why not. With
-- trusted keys (plan's opts.trust) it must also be signed by one of them
-- and name this very object and its size (lib.trust.check): a backup that
-- anyone who can write the bucket could have made never counts as the
-- newest, so forged newer backups cannot get the real ones pruned.
local function read_manifest(inv, b, keys)
  local e = b.manifest_entry
  if e.size > manifest.MAX_BYTES then return nil, e.path .. " is too large to be a pgvault manifest" end
  local ok, text = read_entry(inv, e)
  if not ok then return nil, "cannot read " .. e.path .. ": " .. tostring(text) end
  if keys then
    local sig = b.signature_entry and select(2, read_entry(inv, b.signature_entry)) or nil
    local tok, m = pcall(require("lib.trust").check, { keys = keys, manifest = text, signature = sig,
      object = b.name, bytes = b.size, where = b.name })
    if not tok then return nil, pgvault.is_error(m) and m.message or tostring(m), "untrusted" end
    return m
  end
  local dok, m = pcall(manifest.decode, text, e.path)
  if not dok then return nil, tostring(m) end
  return m
end

-- ------------------------------------------------------------------------
-- Plan
-- ------------------------------------------------------------------------

-- Says which rules apply (the run's log).
function prune.announce(policy)
  log.info("%s, per suffix; the newest backup of each is always kept", retention.describe(policy))
end

-- Seconds in a grace duration ("24h", "2d"; default 24h).
function prune.grace_seconds(text, now)
  return retention.seconds(text or prune.DEFAULT_GRACE, "grace", now)
end

local function age_text(seconds)
  if seconds < 3600 then return string.format("%dm", seconds // 60) end
  if seconds < 2 * 86400 then return string.format("%dh", seconds // 3600) end
  return string.format("%dd", seconds // 86400)
end

-- The stem (STAMP[-N]_SUFFIX) of a backup's file, of a temporary file
-- being written for one (.NAME.RANDOM.partial), or of an upload's key.
local function stem_of(name)
  name = name:gsub("^%.", ""):gsub("%.[^.]+%.partial$", "")
  return name:match("^(.-)%.backup") or name:match("^(.-)_globals%.sql")
end

-- Who holds a reservation (lib.lock.claim_note), or nil (an empty one
-- names nobody: not read).
local function claimant(inv, r)
  if r.size == 0 or (r.size or 0) > 4096 then return nil end
  local ok, text
  if inv.remote then
    ok, text = pcall(inv.client.get, inv.client, r.path)
  else
    ok, text = pcall(fs.read_file, r.path)
  end
  return ok and lock.claimant(text) or nil
end

-- Reservations: stale past the grace period, or sooner when the process
-- that made it is gone (it ran on this machine: a killed backup); a live
-- one protects its backup. Returns the stems reserved and the stems whose
-- backup is gone (-> the pid that held it).
local function sort_reservations(inv, plan, grace, now)
  local reserved, gone = {}, {}
  local me = lock.identity()
  for _, r in ipairs(inv.reservations) do
    local age = now - (r.mtime or now)
    local holder = claimant(inv, r)
    if holder and holder.host == me.host and holder.boot == me.boot and not lock.process_gone(holder, me) then
      reserved[r.stem] = true -- its backup is under way, whatever its age
    elseif age > grace then
      plan.orphans[#plan.orphans + 1] = { entry = r, why = "stale reservation, " .. age_text(age) .. " old" }
    elseif holder and lock.process_gone(holder, me) then
      gone[r.stem] = tostring(holder.pid)
      plan.orphans[#plan.orphans + 1] = { entry = r, why = string.format("stale reservation: its backup (pid %s "
        .. "on this machine) is gone", gone[r.stem]) }
    else
      reserved[r.stem] = true
    end
  end
  return reserved, gone
end

-- What is not a complete backup: incomplete archives, strays, temporaries,
-- reservations and uploads, into plan.orphans (past the grace period, or
-- left by a backup whose process is gone) or plan.young (left alone).
-- Returns the complete backups.
local function sort_leftovers(inv, plan, grace, now)
  local function put(list, entry, why) list[#list + 1] = { entry = entry, why = why } end
  local reserved, gone = sort_reservations(inv, plan, grace, now)
  local function dead(name)
    local pid = gone[stem_of(name) or ""]
    return pid and string.format("its backup (pid %s) is gone", pid)
  end
  local complete = {}
  for _, b in ipairs(inv.backups) do
    local age = now - (b.mtime or now)
    if b.manifest_entry then
      complete[#complete + 1] = b
    elseif not dead(b.name) and (reserved[stem_of(b.name)] or age <= grace) then
      put(plan.young, b, string.format("no manifest, %s old: an upload may be in flight", age_text(age)))
    else
      put(plan.orphans, b, "no manifest, " .. (dead(b.name) or (age_text(age) .. " old")))
      if b.signature_entry then put(plan.orphans, b.signature_entry, "signature of an incomplete backup") end
    end
  end
  for _, list in ipairs({ inv.strays, inv.temporaries }) do
    for _, e in ipairs(list) do
      local age = now - (e.mtime or now)
      local what = e.name:match("%.partial$") and "temporary file" or "without its archive"
      local why = dead(e.name)
      local under_way = not why and reserved[stem_of(e.name) or ""]
      if under_way then what = what .. " of a backup under way" end
      put((why or (age > grace and not under_way)) and plan.orphans or plan.young, e,
        what .. ", " .. (why or (age_text(age) .. " old")))
    end
  end
  for _, u in ipairs(inv.uploads) do
    local age = now - (u.mtime or now)
    local why = dead(u.name)
    if why or (age > grace and not reserved[stem_of(u.name) or ""]) then
      plan.uploads[#plan.uploads + 1] = { upload = u, why = "unfinished upload: " .. (why or ("started "
        .. age_text(age) .. " ago")) }
    end
  end
  return complete
end

-- The rules over the complete backups, and a check that each group's
-- newest is really a backup: a damaged manifest is left alone (plan.damaged)
-- and the group planned again.
local function apply_rules(inv, plan, complete, policy, now, keys)
  while true do
    local keep, remove = retention.plan(complete, policy, now)
    local bad
    local seen = {}
    for _, k in ipairs(keep) do
      local b = k.backup
      local group = tostring(b.database) .. "\0" .. b.env
      if not seen[group] then
        seen[group] = true
        if not b.checked then
          local m, why, untrusted = read_manifest(inv, b, keys)
          b.checked = true
          if not m then
            bad = b
            b.problem, b.untrusted = why, untrusted
            break
          end
          b.manifest = m
        end
      end
    end
    if not bad then
      plan.keep, plan.remove = keep, remove
      return
    end
    plan.damaged[#plan.damaged + 1] = bad
    for i, b in ipairs(complete) do if b == bad then table.remove(complete, i) break end end
  end
end

-- opts: grace (seconds), now, trust (public key files: each group's newest
-- must be signed by one; PGVAULT_TRUST too). Returns
-- { keep = {{backup, reasons}}, remove = {backup}, damaged = {backup},
--   orphans = {entry, why}, young = {entry, why}, uploads = {upload, why} }.
function prune.plan(inv, policy, opts)
  local now = opts.now or os.time()
  local grace = opts.grace or prune.grace_seconds(nil, now)
  local plan = { keep = {}, remove = {}, damaged = {}, orphans = {}, young = {}, uploads = {}, policy = policy }
  local complete = sort_leftovers(inv, plan, grace, now)
  apply_rules(inv, plan, complete, policy, now, require("lib.trust").keys(opts.trust))
  return plan
end

-- ------------------------------------------------------------------------
-- Apply
-- ------------------------------------------------------------------------

local function delete_paths(inv, paths)
  if #paths == 0 then return end
  if inv.remote then
    -- Batches of prune.BATCH keys: a server deletes 1000 (S3's limit) slowly
    -- enough that a loaded one times the request out.
    for first = 1, #paths, prune.BATCH do
      local keys = {}
      for i = first, math.min(#paths, first + prune.BATCH - 1) do keys[#keys + 1] = paths[i]:sub(#inv.base + 1) end
      inv.client:delete_many(inv.base, keys)
    end
  else
    for _, p in ipairs(paths) do
      local ok, err = os.remove(p)
      if not ok and fs.exists(p) then pgvault.raise("io", "cannot remove " .. p .. ": " .. tostring(err)) end
    end
  end
end

-- Deletes what the plan removes; returns counts.
function prune.apply(plan, inv)
  local manifests, rest = {}, {}
  for _, b in ipairs(plan.remove) do
    manifests[#manifests + 1] = b.manifest_entry.path
    if b.signature_entry then rest[#rest + 1] = b.signature_entry.path end
    rest[#rest + 1] = b.path
  end
  -- Manifests first: once it is gone a backup is no longer complete, so a
  -- prune stopped here leaves archives the next one removes, never a
  -- half-deleted "latest".
  delete_paths(inv, manifests)
  delete_paths(inv, rest)
  local others = {}
  for _, o in ipairs(plan.orphans) do others[#others + 1] = o.entry.path end
  delete_paths(inv, others)
  for _, u in ipairs(plan.uploads) do inv.client:abort_upload(u.upload.path, u.upload.upload_id) end
  return { backups = #plan.remove, orphans = #plan.orphans, uploads = #plan.uploads }
end

-- Rows for the --dry-run table: { action, name, why }, newest first.
function prune.rows(plan)
  local rows = {}
  for _, k in ipairs(plan.keep) do rows[#rows + 1] = { "keep", k.backup.name, table.concat(k.reasons, ", ") } end
  for _, b in ipairs(plan.remove) do rows[#rows + 1] = { "remove", b.name, "no rule keeps it" } end
  table.sort(rows, function(a, b) return a[2] > b[2] end)
  for _, b in ipairs(plan.damaged) do
    rows[#rows + 1] = { "leave", b.name, (b.untrusted and "not signed by a trusted key, not counted as the newest, "
      .. "left for you to inspect: " or "damaged manifest, left for you to inspect: ") .. tostring(b.problem) }
  end
  for _, y in ipairs(plan.young) do rows[#rows + 1] = { "leave", y.entry.name, y.why } end
  for _, o in ipairs(plan.orphans) do rows[#rows + 1] = { "remove", o.entry.name, o.why } end
  for _, u in ipairs(plan.uploads) do rows[#rows + 1] = { "abort", u.upload.name, u.why } end
  return rows
end

return prune
