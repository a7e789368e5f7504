-- The fault matrix's prunes: of a directory (prune) and of a bucket prefix
-- (prune_bucket), each holding four complete backups, of which
-- --keep-last 2 keeps the two newest. What must hold: a completed prune
-- left exactly those two; a failed one removed nothing; whatever stopped
-- it, a manifest never outlives its archive (manifests go first), the two
-- newest are always there, and no lock is left behind.
local t = require "harness.testing"
local h = require "harness.env"
local fs = require "pgvault.fs"
local s3 = require "pgvault.s3"

return function(matrix)
  local STAMPS = { "20260101000000", "20260102000000", "20260103000000", "20260104000000" }

  -- One real backup's archive and manifest, stored four times under the
  -- names of four days.
  local function prepare()
    local dir = h.tmpdir() .. "/one"
    local r = h.pgvault({ "backup", "--db", matrix.source().source, "--to", dir, "--suffix", "faults" })
    assert(r.code == 0, r.stderr)
    local archive = r.stdout:match("([^\n/]+)\n?$")
    return { archive_bytes = h.read(dir .. "/" .. archive), manifest_text = h.read(dir .. "/" .. archive
      .. ".manifest.json") }
  end

  local function names(stamps)
    local out = {}
    for _, s in ipairs(stamps) do
      out[#out + 1] = s .. "_faults.backup.zst"
      out[#out + 1] = s .. "_faults.backup.zst.manifest.json"
    end
    table.sort(out)
    return out
  end

  local function fill(put, ctx)
    for _, s in ipairs(STAMPS) do
      put(s .. "_faults.backup.zst", ctx.archive_bytes)
      put(s .. "_faults.backup.zst.manifest.json", ctx.manifest_text)
    end
  end

  local function check_left(ctx, row, listing)
    local left = listing(ctx)
    local outcome = matrix.outcome(ctx, row)
    if outcome == "killed" then return end
    if outcome == "completes" then
      t.eq(left, names({ STAMPS[3], STAMPS[4] }), ctx.name .. ": the two newest backups, nothing else")
    elseif outcome == "fails" then
      t.eq(left, names(STAMPS), ctx.name .. ": nothing removed")
    end
    local set = {}
    for _, n in ipairs(left) do set[n] = true end
    for _, n in ipairs(left) do
      local archive = n:match("^(.-)%.manifest%.json$")
      if archive then t.ok(set[archive], ctx.name .. ": the manifest " .. n .. " has its archive") end
    end
    for _, s in ipairs({ STAMPS[3], STAMPS[4] }) do
      t.ok(set[s .. "_faults.backup.zst.manifest.json"], ctx.name .. ": the newest two stay: " .. s)
    end
  end

  local function after_kill(listing)
    return function(ctx, row)
      ctx.args, ctx.env = { "--grace", "0h" }, {}
      local r = matrix.operations[row.op].run(ctx, nil)
      t.eq(r.code, 0, ctx.name .. ": the next prune completes: " .. r.stderr)
      t.eq(listing(ctx), names({ STAMPS[3], STAMPS[4] }), ctx.name .. ": the two newest, nothing else")
    end
  end

  -- Every name in the directory (dot names included) but the lock file,
  -- which stays, released (matrix.released_lock).
  local function dir_listing(ctx)
    local out = {}
    for _, n in ipairs(fs.listdir(ctx.target)) do
      if not matrix.released_lock(ctx.target, n) then out[#out + 1] = n end
    end
    table.sort(out)
    return out
  end

  local function bucket_listing(ctx)
    local out = {}
    for _, o in ipairs(s3.list(ctx.prefix, ctx.s3)) do out[#out + 1] = o.key:match("[^/]+$") end
    table.sort(out)
    return out
  end

  matrix.operations.prune = {
    prepare = prepare,
    setup = function(ctx)
      fill(function(name, data) fs.write_file(ctx.target .. "/" .. name, data) end, ctx)
    end,
    run = function(ctx, row)
      return matrix.run_command(ctx, row, { "prune", ctx.target, "--keep-last", "2" })
    end,
    check = function(ctx, row) check_left(ctx, row, dir_listing) end,
    after_kill = after_kill(dir_listing),
  }

  matrix.operations.prune_bucket = {
    prepare = prepare,
    setup = function(ctx)
      fill(function(name, data) s3.put(ctx.prefix .. name, data, ctx.s3) end, ctx)
    end,
    run = function(ctx, row)
      return matrix.run_command(ctx, row, { "prune", ctx.prefix, "--keep-last", "2" })
    end,
    check = function(ctx, row) check_left(ctx, row, bucket_listing) end,
    after_kill = after_kill(bucket_listing),
  }
end
