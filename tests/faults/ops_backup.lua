-- The fault matrix's operations that write backups: backup to a directory
-- (backup_dir), backup to a bucket (backup_bucket), and the nightly run
-- into a directory (nightly). What must hold, whatever the fault: every
-- final name is a complete backup (an archive whose manifest is beside it
-- and matches it) or there is none; a completed run made exactly one; a
-- failed or interrupted one left nothing, no dot name (temporary file,
-- name reservation, lock) and no unfinished multipart upload; after
-- SIGKILL, the next run completes and sweeps what the killed one left.
local t = require "harness.testing"
local h = require "harness.env"
local s3h = require "harness.s3"
local fs = require "pgvault.fs"
local s3 = require "pgvault.s3"
local stream = require "pgvault.stream"
local manifest = require "lib.manifest"

return function(matrix)
  -- The source database of a rows file (made once): about 12 MB of rows,
  -- several 5 MiB parts, compressed or not.
  local made
  function matrix.source()
    if made then return made end
    local name = "faults_" .. matrix.tag .. "_source"
    local db = h.createdb(name)
    h.psql(db, "CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS note "
      .. "FROM generate_series(1, 150000) g;")
    made = { source = db, source_name = name, rows = "150000\n" }
    t.teardown(function() h.dropdb(name) end)
    return made
  end
  local source = function() return matrix.source() end

  -- What is in a directory destination: final names, dot names.
  local function dir_inventory(ctx)
    local inv = { finals = {}, dots = {}, uploads = {} }
    for _, name in ipairs(fs.listdir(ctx.target)) do
      -- a directory's lock (nightly, prune) is an flock on a file that
      -- stays: it must be released
      if not matrix.released_lock(ctx.target, name) then
        table.insert(name:sub(1, 1) == "." and inv.dots or inv.finals, name)
      end
    end
    table.sort(inv.finals)
    table.sort(inv.dots)
    inv.read = function(name) return fs.read_file(ctx.target .. "/" .. name) end
    inv.sha256 = function(name) return s3h.file_sha256(ctx.target .. "/" .. name) end
    return inv
  end

  -- The same of a bucket prefix, with its unfinished multipart uploads.
  local function bucket_inventory(ctx)
    local inv = { finals = {}, dots = {} }
    for _, o in ipairs(s3.list(ctx.prefix, ctx.s3)) do
      local name = o.key:match("[^/]+$")
      table.insert(name:sub(1, 1) == "." and inv.dots or inv.finals, name)
    end
    table.sort(inv.finals)
    table.sort(inv.dots)
    inv.uploads = s3.uploads(ctx.prefix, ctx.s3)
    inv.read = function(name) return s3.get(ctx.prefix .. name, ctx.s3) end
    inv.sha256 = function(name)
      local opts = { url = ctx.prefix .. name }
      for k, v in pairs(ctx.s3) do opts[k] = v end
      return stream.run { s3.reader(opts), stream.sha256(), stream.discard() }.sha256.sha256
    end
    return inv
  end

  -- Every final name belongs to a complete backup whose archive matches
  -- its manifest; returns how many backups there are.
  local function complete_backups(ctx, inv)
    local names = {}
    for _, n in ipairs(inv.finals) do names[n] = true end
    local count = 0
    for _, n in ipairs(inv.finals) do
      local archive = n:match("^(.-)%.manifest%.json$")
      if archive then
        t.ok(names[archive], ctx.name .. ": the manifest " .. n .. " has its archive")
        local m = manifest.decode(inv.read(n), n)
        t.eq(inv.sha256(archive), m.stored.sha256, ctx.name .. ": " .. archive .. " is whole")
        count = count + 1
      elseif not n:match("%.minisig$") then
        t.ok(names[n .. ".manifest.json"], ctx.name .. ": the archive " .. n .. " has its manifest")
      end
    end
    return count
  end

  local function check(ctx, row, inventory, n_expected)
    local inv = inventory(ctx)
    local outcome = matrix.outcome(ctx, row)
    if outcome == "killed" then return end
    if outcome == "completes" then
      t.eq(complete_backups(ctx, inv), n_expected or 1, ctx.name .. ": one backup: " .. table.concat(inv.finals, " "))
    else
      t.eq(inv.finals, {}, ctx.name .. ": no object or file under a final name, no manifest")
    end
    if row.leaves_upload then return end
    t.eq(inv.dots, {}, ctx.name .. ": no temporary file, reservation or lock left")
    t.eq(#inv.uploads, 0, ctx.name .. ": no multipart upload left (ListMultipartUploads)")
  end

  -- After SIGKILL: the next run completes, and then only complete backups
  -- remain (one, or two if the killed run had committed its own).
  local function after_kill(inventory)
    return function(ctx, row)
      ctx.args, ctx.env = {}, {}
      local r = matrix.operations[row.op].run(ctx, nil)
      t.eq(r.code, 0, ctx.name .. ": the next run completes: " .. r.stderr)
      local inv = inventory(ctx)
      local n = complete_backups(ctx, inv)
      t.ok(n == 1 or n == 2, ctx.name .. ": the next run's backup (and the killed run's, if it had finished): "
        .. table.concat(inv.finals, " "))
      t.eq(inv.dots, {}, ctx.name .. ": the next run swept the temporary files and the reservation, lock")
      t.eq(#inv.uploads, 0, ctx.name .. ": the next run swept the unfinished upload")
    end
  end

  matrix.operations.backup_dir = {
    prepare = source,
    run = function(ctx, row)
      return matrix.run_command(ctx, row, { "backup", "--db", ctx.pg_source or ctx.source, "--to", ctx.target,
        "--suffix", "faults" })
    end,
    check = function(ctx, row) check(ctx, row, dir_inventory) end,
    after_kill = after_kill(dir_inventory),
  }

  matrix.operations.backup_bucket = {
    prepare = source,
    run = function(ctx, row)
      return matrix.run_command(ctx, row, { "backup", "--db", ctx.pg_source or ctx.source, "--to", ctx.prefix,
        "--suffix", "faults", "--compress", "none", "--part-size", "5", "--parallel", "2" })
    end,
    check = function(ctx, row, r)
      check(ctx, row, bucket_inventory)
      if not row.leaves_upload then return end
      -- The keys went: neither the upload nor the name's reservation could
      -- be removed. `s3 cleanup` (as the message says) and the next prune
      -- sweep them.
      local inv = bucket_inventory(ctx)
      t.eq(#inv.uploads, 1, ctx.name .. ": the upload the revoked keys could not abort")
      t.eq(#inv.dots, 1, ctx.name .. ": the reservation the revoked keys could not remove")
      t.match(inv.dots[1] or "", "^%.%d+_faults%.reserved$", ctx.name .. ": a reservation")
      t.match(r.stderr, "could not abort multipart upload .*; remove it with 'pgvault s3 cleanup s3://",
        ctx.name .. ": says so, and how to remove it")
      t.match(r.stderr, "warning: could not remove s3://%S+/%.%d+_faults%.reserved .*'pgvault prune' removes it",
        ctx.name .. ": and of the reservation")
      local env = s3h.env({ AWS_ACCESS_KEY_ID = ctx.access_key, AWS_SECRET_ACCESS_KEY = ctx.secret_key })
      local c = h.pgvault({ "s3", "cleanup", "--older-than", "0", ctx.prefix }, { env = env })
      t.eq(c.code, 0, c.stderr)
      c = h.pgvault({ "prune", ctx.prefix, "--grace", "0h" }, { env = env })
      t.eq(c.code, 0, c.stderr)
      t.match(c.stderr, "remove %.%d+_faults%.reserved %(stale reservation", ctx.name .. ": prune sweeps it")
      inv = bucket_inventory(ctx)
      t.eq(inv.dots, {}, ctx.name .. ": no reservation left")
      t.eq(#inv.uploads, 0, ctx.name .. ": no multipart upload left")
    end,
    after_kill = after_kill(bucket_inventory),
  }

  -- nightly into a directory: lock, backup, prune; no drill, no pings.
  matrix.operations.nightly = {
    prepare = source,
    run = function(ctx, row)
      return matrix.run_command(ctx, row, { "nightly", "--db", ctx.pg_source or ctx.source, "--to", ctx.target,
        "--suffix", "faults", "--keep-last", "5", "--drill-every", "never" })
    end,
    check = function(ctx, row, r)
      check(ctx, row, dir_inventory)
      local outcome = matrix.outcome(ctx, row)
      if outcome == "fails" then t.match(r.stdout, "^nightly faults: FAILED", ctx.name .. ": the summary says so") end
      if outcome == "interrupted" then t.match(r.stdout, "^nightly faults: interrupted", ctx.name .. ": summary") end
    end,
    after_kill = after_kill(dir_inventory),
  }
end
