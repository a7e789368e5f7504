-- The restore procedure, usable from any workflow:
--   require("lib.restore").run{ src = path, db = url, jobs = 1, drop_old = false }
-- restores into a NEW database (created from template0 with the target's
-- owner, encoding and locale), checks it (pg_restore's exit status, the
-- archive's SHA-256 and per-table row counts against the manifest when it
-- has them), and only then swaps names: the old database is kept as
-- <db>_old_<stamp> (dropped with drop_old). A failed restore drops the new
-- database and leaves the live one untouched. in_place = true is the old
-- procedure: drop the database, create it again and restore into it.
local archive = require "pgvault.archive"
local cjson = require "cjson"
local dump = require "pgvault.dump"
local fs = require "pgvault.fs"
local pg = require "pgvault.pg"
local pgvault = require "pgvault"
local proc = require "pgvault.proc"
local stream = require "pgvault.stream"
local manifest = require "lib.manifest"
local naming = require "lib.naming"
local rowcheck = require "lib.rowcheck"

local restore = {}

local function fail(kind, fmt, ...)
  pgvault.raise(kind, string.format(fmt, ...))
end

-- "zst", "plain" or "age" from the file's first bytes; raises for anything else.
function restore.sniff(src)
  local st = fs.stat(src)
  if not st then fail("io", "cannot read %s: no such file", src) end
  if st.type ~= "file" then fail("io", "cannot restore %s: it is not a regular file", src) end
  local f, why = io.open(src, "rb")
  if not f then fail("io", "cannot read %s: %s", src, why) end
  local head = f:read(32) or ""
  f:close()
  return restore.kind_of(head, src)
end

-- The same from the first bytes `head` of the backup named `src`.
function restore.kind_of(head, src)
  if head:sub(1, 5) == "PGDMP" then return "plain" end
  if head:sub(1, 4) == "\x28\xb5\x2f\xfd" then return "zst" end
  if head:sub(1, 21) == "age-encryption.org/v1" or head:sub(1, 26) == "-----BEGIN AGE ENCRYPTED F" then
    return "age"
  end
  fail("io", "%s is not a backup: neither a pg_dump custom-format archive (PGDMP) nor zstd-compressed one", src)
end

local function q(c, ident) return c:quote_ident(ident) end
local function lit(c, s) return c:quote_literal(s) end

-- A connection to the server's maintenance database (postgres, else
-- template1). Also used by the restore drill of verify.
function restore.admin_connect(url)
  local last
  for _, db in ipairs({ "postgres", "template1" }) do
    local ok, c = pcall(pg.connect, (dump.conninfo(url, { dbname = db, password = true })))
    if ok then return c end
    last = c
    if type(c) == "table" and c.sqlstate ~= "3D000" then break end
  end
  error(last, 0)
end

-- Owner, encoding and locale of a database, or nil when it does not exist.
local function db_properties(admin, name)
  local rows = admin:query([[SELECT to_jsonb(d) AS j, pg_get_userbyid(d.datdba) AS owner,
    pg_encoding_to_char(d.encoding) AS encoding FROM pg_database d WHERE d.datname = $1]], name)
  if #rows == 0 then return nil end
  local j = cjson.decode(rows[1].j)
  return { owner = rows[1].owner, encoding = rows[1].encoding, collate = j.datcollate, ctype = j.datctype,
    provider = j.datlocprovider, locale = j.datlocale or j.daticulocale }
end

-- CREATE DATABASE from template0 copying `props` (when known).
local function create_database(admin, name, props)
  local sql = { "CREATE DATABASE", q(admin, name), "TEMPLATE template0" }
  if props then
    sql[#sql + 1] = "OWNER " .. q(admin, props.owner)
    sql[#sql + 1] = "ENCODING " .. lit(admin, props.encoding)
    sql[#sql + 1] = "LC_COLLATE " .. lit(admin, props.collate) .. " LC_CTYPE " .. lit(admin, props.ctype)
    if props.provider == "i" and props.locale and props.locale ~= cjson.null then
      sql[#sql + 1] = "LOCALE_PROVIDER icu ICU_LOCALE " .. lit(admin, props.locale)
    elseif props.provider == "b" and props.locale and props.locale ~= cjson.null then
      sql[#sql + 1] = "LOCALE_PROVIDER builtin BUILTIN_LOCALE " .. lit(admin, props.locale)
    end
  end
  admin:exec(table.concat(sql, " "))
end

-- Drops database `name` if it exists, ending its sessions (WITH FORCE).
function restore.drop_database(admin, name)
  admin:exec("DROP DATABASE IF EXISTS " .. q(admin, name) .. " WITH (FORCE)")
end
local drop_database = restore.drop_database

-- Ends the other sessions on `name`, saying whose (pg_terminate_backend:
-- needs superuser, the same role, or membership in pg_signal_backend).
local function terminate_sessions(admin, name)
  local rows = admin:query([[SELECT pid, usename, application_name FROM pg_stat_activity
    WHERE datname = $1 AND pid <> pg_backend_pid()]], name)
  for _, r in ipairs(rows) do
    local ok, e = pcall(admin.query, admin, "SELECT pg_terminate_backend($1)", r.pid)
    log.warn("terminating session %d (user %s, %s) on database %s%s", r.pid, tostring(r.usename),
      r.application_name ~= "" and r.application_name or "no application name", name,
      ok and "" or (": " .. tostring(e)))
  end
  return #rows
end

-- Renames, retrying while sessions reconnect (SQLSTATE 55006).
local function rename_database(admin, from, to)
  for attempt = 1, 50 do
    local ok, e = pcall(admin.exec, admin, "ALTER DATABASE " .. q(admin, from) .. " RENAME TO " .. q(admin, to))
    if ok then return end
    if type(e) ~= "table" or e.sqlstate ~= "55006" or attempt == 50 then error(e, 0) end
    terminate_sessions(admin, from)
    proc.sleep(0.1)
  end
end

-- Compares per-table row counts of the restored database with the manifest
-- (see lib.rowcheck: rows inserted as the server counted them, any
-- difference re-counted with count(*); count_rows counts every table).
local function check_row_counts(url, dbname, counts, count_rows)
  local c <close> = pg.connect((dump.conninfo(url, { dbname = dbname, password = true })))
  local tables = {}
  for name, rows in pairs(counts) do
    local schema, tbl = name:match("^(.-)%.(.+)$")
    tables[#tables + 1] = { schema = schema, name = tbl, rows = rows }
  end
  table.sort(tables, function(a, b) return a.schema .. "." .. a.name < b.schema .. "." .. b.name end)
  local problems, checked, how = rowcheck.compare(c, tables, { inserted = not count_rows })
  if #problems > 0 then
    local bad = {}
    for i = 1, math.min(#problems, 3) do bad[i] = rowcheck.describe(problems[i]) end
    fail("verify", "the restored database does not match the manifest: %s%s", table.concat(bad, "; "),
      #problems > 3 and string.format(" (and %d more)", #problems - 3) or "")
  end
  log.debug("row counts: %d tables by the server's count of inserted rows, %d by count(*)", how.stats, how.counted)
  return checked
end

-- Streams (or, for parallel jobs, lays down and reads) the archive into
-- database `dbname`; returns what the stages saw.
local function load_archive(o, kind, dbname, m)
  -- An encrypted backup: decrypted as it streams (each chunk authenticated
  -- before pg_restore sees it); the layer inside is zstd when the manifest
  -- or the name (….zst.age) says so.
  local decrypt
  if kind == "age" then
    decrypt = require("pgvault.crypto").decryptor { identities = o.identities }
    local method = m and type(m.compression) == "table" and m.compression.method
    kind = (method == "zstd" or (not m and o.src:match("%.zst%.age$"))) and "zst" or "plain"
  end
  local target = dump.conninfo(o.db, { dbname = dbname, password = true })
  local args = { "--exit-on-error" }
  for _, a in ipairs(o.restore_args or {}) do args[#args + 1] = a end
  local seen = {}
  if o.jobs > 1 then
    local file, tmp = o.src, nil
    -- Always read the stored file once: its checksum, and for .zst the
    -- plain archive pg_restore -j needs (it refuses standard input).
    local stages = { stream.file_reader(o.src), stream.sha256 { label = "stored" }, decrypt }
    if kind == "zst" or decrypt then
      tmp = fs.tmpdir("pgvault-restore")
      file = tmp .. "/archive.backup"
      if kind == "zst" then stages[#stages + 1] = stream.unzstd() end
      -- checks the archive as it lands and records where each data block
      -- starts, so the TOC's offsets can be filled for pg_restore's workers
      stages[#stages + 1] = archive.verifier { label = "archive" }
      stages[#stages + 1] = stream.file_writer(file, { mode = 384 })
      log.info("decrypting or decompressing %s into a temporary file for pg_restore --jobs=%d", o.src, o.jobs)
    else
      stages[#stages + 1] = stream.discard()
    end
    local ok, r = pcall(stream.run, stages)
    if ok and r.archive and not r.archive.offsets then
      ok, r = pcall(function()
        archive.fill_offsets(file, r.archive)
        return r
      end)
    end
    if ok then
      seen.stored = r.stored
      if m and m.stored and m.stored.sha256 and m.stored.sha256 ~= r.stored.sha256 then
        ok, r = false, pgvault.error("verify", o.src .. " does not match its manifest (SHA-256 differs): "
          .. "the file is damaged or was replaced")
      end
    end
    if ok then
      ok, r = pcall(stream.run, { dump.pg_restore { db = target, file = file, jobs = o.jobs, args = args,
        pg_bin = o.pg_bin }, stream.discard() })
      if ok then seen.pg_restore = r.pg_restore end
    end
    if tmp then pcall(fs.remove_tree, tmp) end
    if not ok then error(r, 0) end
    return seen
  end
  local stages = { o.source and o.source() or stream.file_reader(o.src), stream.sha256 { label = "stored" } }
  if o.source and m and type(m.stored) == "table" then
    -- streamed from elsewhere (a bucket): size and SHA-256 checked by a tap,
    -- so a mismatch fails the run and the new database is dropped
    local bytes, sha = m.stored.bytes, m.stored.sha256
    if sha ~= nil and not (type(sha) == "string" and sha:match("^%x+$") and #sha == 64) then
      fail("verify", "the manifest of %s is damaged: its stored SHA-256 is not 64 hex digits", o.src)
    end
    stages[#stages + 1] = require("pgvault.s3").expect { bytes = bytes and math.tointeger(tonumber(bytes)) or nil,
      sha256 = sha, what = o.src }
  end
  stages[#stages + 1] = decrypt
  if kind == "zst" then stages[#stages + 1] = stream.unzstd() end
  local quiet = log.level() ~= "info" and log.level() ~= "debug"
  stages[#stages + 1] = stream.progress { label = "progress", tty = not quiet and nil }
  stages[#stages + 1] = dump.pg_restore { db = target, args = args, pg_bin = o.pg_bin }
  local r = stream.run(stages)
  if m and m.stored and m.stored.sha256 and m.stored.sha256 ~= r.stored.sha256 then
    fail("verify", "%s does not match its manifest (SHA-256 differs): the file is damaged or was replaced", o.src)
  end
  return r
end

function restore.options(o)
  local r = {}
  for k, v in pairs(o or {}) do r[k] = v end
  if type(r.src) ~= "string" or r.src == "" then fail("usage", "a backup file to restore is required") end
  if type(r.db) ~= "string" or r.db == "" then fail("usage", "a database URL is required (--db URL)") end
  r.jobs = math.tointeger(tonumber(r.jobs or 1))
  if not r.jobs or r.jobs < 1 or r.jobs > 64 then fail("usage", "--jobs must be 1..64") end
  if r.in_place and not r.yes then
    fail("usage", "--in-place drops the current database before restoring; add --yes to confirm")
  end
  if r.in_place and r.drop_old then fail("usage", "--drop-old has no meaning with --in-place") end
  local _, dbname = dump.conninfo(r.db)
  if not dbname or dbname == "" then fail("usage", "the URL must name the database to restore into") end
  r.target = dbname
  return r
end

-- The options checked, the backup's kind and its manifest (nil if none).
local function prepare(opts)
  local o = restore.options(opts)
  -- o.source/o.head/o.manifest: a backup streamed from elsewhere (its
  -- source stage, first bytes and manifest); single job only.
  if o.source and o.jobs > 1 then fail("usage", "a streamed source restores with one job only") end
  local kind = o.head and restore.kind_of(o.head, o.src) or restore.sniff(o.src)
  if kind == "age" and #(o.identities or {}) == 0 then
    fail("usage", "%s is encrypted (age): give the identity file that opens it with -i FILE", o.src)
  end
  local m, why = o.manifest, "none given"
  if not o.source then m, why = manifest.for_archive(o.src) end
  if not m then log.info("restoring without a manifest (%s): checksum and row counts not checked", why) end
  return o, kind, m
end

-- Returns {database=, old=, new=, row_counts_checked=, result=}.
function restore.run(opts)
  local o, kind, m = prepare(opts)

  local admin <close> = restore.admin_connect(o.db)
  local props = db_properties(admin, o.target)
  local stamp = naming.stamp()

  if o.in_place then
    log.warn("restoring in place: database %s is dropped and created again", o.target)
    if props then
      terminate_sessions(admin, o.target)
      drop_database(admin, o.target)
    end
    create_database(admin, o.target, props)
    local r = load_archive(o, kind, o.target, m)
    local counts = manifest.row_counts(m)
    local checked = counts and check_row_counts(o.db, o.target, counts, o.count_rows) or 0
    return { database = o.target, row_counts_checked = checked, result = r }
  end

  local new = naming.db_with_suffix(o.target, "_restore_" .. stamp)
  if db_properties(admin, new) then fail("io", "database %s already exists: is another restore running?", new) end
  create_database(admin, new, props)
  log.info("restoring %s into new database %s", o.src, new)
  -- Swaps names: the live database out of the way (kept as `old`), the new
  -- one in. Runs as a critical section: a Ctrl-C waits for it to end, since
  -- stopping half-way could leave the live database refusing connections
  -- or under another name. Each failure puts back what it changed.
  local old, swapped, moved = nil, false, false
  local function swap()
    if props then
      old = naming.db_with_suffix(o.target, "_old_" .. stamp)
      -- Keep new sessions out while we rename (the owner may do this).
      local locked = pcall(admin.exec, admin, "ALTER DATABASE " .. q(admin, o.target) .. " ALLOW_CONNECTIONS false")
      local tok, terr = pcall(terminate_sessions, admin, o.target)
      local rok, rerr = false, terr
      if tok then rok, rerr = pcall(rename_database, admin, o.target, old) end
      if locked then
        pcall(admin.exec, admin, "ALTER DATABASE " .. q(admin, rok and old or o.target) .. " ALLOW_CONNECTIONS true")
      end
      if not rok then
        old = nil
        fail("pg", "cannot rename database %s out of the way (%s): it is unchanged", o.target, tostring(rerr))
      end
    end
    local sok, serr = pcall(rename_database, admin, new, o.target)
    if not sok then
      if old and not pcall(rename_database, admin, old, o.target) then
        moved = true
        fail("pg", "cannot rename %s to %s (%s), nor put %s back: rename it to %s by hand", new, o.target,
          tostring(serr), old, o.target)
      end
      old = nil
      fail("pg", "cannot rename %s to %s (%s); the original database was put back", new, o.target, tostring(serr))
    end
    swapped = true
    if pgvault.signalled() then
      log.warn("interrupted during the swap, which was finished first: %s is the restored database%s", o.target,
        old and (", the previous one is kept as " .. old) or "")
    end
  end

  local ok, r = pcall(function()
    local t0 = proc.now()
    local res = load_archive(o, kind, new, m)
    log.debug("the archive was loaded in %.2f s", proc.now() - t0)
    local counts = manifest.row_counts(m)
    local checked = 0
    if counts then
      checked = check_row_counts(o.db, new, counts, o.count_rows)
      log.info("row counts of %d tables match the manifest", checked)
    else
      log.info("the manifest has no per-table row counts: checked pg_restore's status and the checksum only")
    end
    pgvault.critical(swap)
    return { result = res, checked = checked }
  end)
  if not ok and not swapped then
    -- even when a signal stopped the restore: that is what the drop cleans up after
    local dok, derr = pcall(pgvault.uninterrupted, drop_database, admin, new)
    if not dok then
      log.error("could not drop the unfinished database %s (%s): drop it by hand", new, tostring(derr))
    end
    if pgvault.is_error(r) then
      r.message = string.format("restore into %s failed%s: %s", o.target,
        moved and "" or string.format(" (database %s left as it was)", o.target), r.message)
    end
    error(r, 0)
  elseif not ok then
    error(r, 0) -- after the swap: the restored database is in place
  end

  if old and o.drop_old then
    drop_database(admin, old)
    log.info("dropped the previous database %s", old)
    old = nil
  end
  return { database = o.target, old = old, new = new, row_counts_checked = r.checked, result = r.result }
end


-- Loads the backup into database `dbname`, which exists and is empty (a
-- database created through a provider's API, as neon-restore does), and
-- checks it as run does: checksum, then row counts against the manifest.
-- opts as run's (o.db is a URL of the server; its database name is not
-- used). Returns {row_counts_checked=, result=, manifest=}.
function restore.load_into(opts, dbname)
  local o, kind, m = prepare(opts)
  local res = load_archive(o, kind, dbname, m)
  local counts = manifest.row_counts(m)
  local checked = counts and check_row_counts(o.db, dbname, counts, o.count_rows) or 0
  return { row_counts_checked = checked, result = res, manifest = m }
end
restore.terminate_sessions = terminate_sessions

return restore
