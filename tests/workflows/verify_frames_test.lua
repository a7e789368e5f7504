-- covers: scripts/lib/layers.lua bindings/stream/zstd.c bindings/stream/unzstd_mt.c
-- Issue 17, verify on every core: a backup is written in zstd frames small
-- enough for stream.unzstd's parallel decoder (4 MiB on two cores), and
-- verify, restore and the restore drill decode them on several threads
-- (layers.stages passes verify's --threads; --threads 1 is one thread).
-- Backups written before that, in 16 MiB frames or in one frame, still
-- verify and restore, in sequence where a frame is too big for a job.
local t = require "harness.testing"
local h = require "harness.env"
local fixture = require "harness.dbfixture"
local cjson = require "cjson"
local stream = require "pgvault.stream"

local DB = "verify_frames_test"
local url = h.createdb(DB)
-- About 22 MB of archive: six frames of 4 MiB, two of 16 MiB, or one.
h.psql(url, [[CREATE TABLE wide (id int PRIMARY KEY, body text);
INSERT INTO wide SELECT g, md5(g::text) || repeat(md5((g * 7)::text), 3) || g FROM generate_series(1, 160000) g;]])
local dir = h.tmpdir()
local ZST = fixture.backup(url, dir)

local function verify_json(path, args)
  local argv = { "verify", "--json" }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  argv[#argv + 1] = path
  local r = h.pgvault(argv, { timeout = 300 })
  t.eq(r.code, 0, r.stderr)
  return cjson.decode(r.stdout)
end

local CPUS = tonumber(h.run({ "nproc" }).stdout) or 1

-- The CPUs stream.unzstd uses when not told (at most 4).
local function default_threads() return math.min(CPUS, 4) end

-- Backup's frames: one 2 MiB job per zstd worker (one per CPU), at least
-- 4 MiB.
local FRAME = math.max(4, 2 * CPUS) << 20

t.test("a fresh backup is in frames of 4 MiB (on two cores), each decoded on its own thread", function()
  local out = verify_json(ZST, { "--threads", "2" })
  t.eq(out.ok, true)
  t.eq(out.matches, true, "it matches its manifest")
  local z = out.unzstd
  t.ok(type(z) == "table", "verify --json reports the zstd stage")
  t.eq(z.threads, 2, "--threads 2: two decoding threads")
  t.eq(z.frames, math.ceil(out.plain.bytes / FRAME), "frames of " .. (FRAME >> 20) .. " MiB")
  t.eq(z.frames_in_parallel, z.frames, "every frame decoded by a worker")
  t.eq(z.frames_in_sequence, 0)
  local m = cjson.decode(h.read(ZST .. ".manifest.json"))
  t.eq(m.compression.frame_size, FRAME, "the manifest records the frame size")
  local one = verify_json(ZST, { "--threads", "1" }).unzstd
  t.eq(one.threads, 1, "--threads 1: one thread")
  t.eq(one.frames, z.frames, "the single-threaded decoder counts the same frames")
  t.eq(one.frames_in_parallel, 0)
  t.eq(verify_json(ZST).unzstd.threads, default_threads(), "by default: the CPUs, at most 4")
end)

-- The backup rewritten in frames of `frame_size` (0: one frame), as older
-- versions wrote it, with its manifest's stored size, digest and block
-- digests made to fit (the archive inside is the same).
local function rewritten(frame_size, name)
  local plain = stream.run { stream.file_reader(ZST), stream.unzstd { threads = 1 }, stream.buffer { max = 1 << 30 } }
  local path = dir .. "/" .. name .. ".backup.zst"
  local m = cjson.decode(h.read(ZST .. ".manifest.json"))
  local r = stream.run { stream.string(plain.buffer.data), stream.zstd { frame_size = frame_size, threads = 2 },
    stream.sha256 { label = "stored" }, stream.block_digests { block_size = m.stored.block_size, label = "blocks" },
    stream.file_writer(path) }
  m.stored.bytes, m.stored.sha256, m.stored.blocks = r.stored.bytes, r.stored.sha256, r.blocks.blocks
  m.compression.frame_size = nil -- older versions did not record it
  h.write(path .. ".manifest.json", cjson.encode(m))
  return path, r.zstd.frames
end

t.test("backups in 16 MiB frames or in one frame (older versions) still verify, in sequence if need be", function()
  local path16, frames16 = rewritten(16 << 20, "20240101000000_old16")
  local out = verify_json(path16, { "--threads", "2" })
  t.eq(out.ok, true)
  t.eq(out.matches, true, "the rewritten backup matches its manifest")
  t.eq(out.unzstd.frames, frames16, "16 MiB frames: " .. frames16)
  t.eq(out.unzstd.frames_in_parallel + out.unzstd.frames_in_sequence, frames16)
  local path1 = rewritten(0, "20240101000000_old1")
  out = verify_json(path1, { "--threads", "2" })
  t.eq(out.ok, true)
  t.eq(out.matches, true)
  t.eq(out.unzstd.frames, 1, "one frame")
  t.eq(out.unzstd.frames_in_sequence, 1, "a frame bigger than a decoding job is decoded in sequence")
  t.eq(out.unzstd.threads, 2)
end)

t.test("restore decodes the frames on several threads too", function()
  local script = dir .. "/restore.lua"
  h.write(script, [[
local r = require("lib.restore").run { src = arg[1], db = arg[2] }
local z = r.result.unzstd
print(z.threads, z.frames, z.frames_in_parallel)]])
  local target = DB .. "_restored"
  h.dropdb(target)
  local pg = h.pg()
  local r = h.pgvault({ "-q", "run", script, ZST, pg.url(target) }, { timeout = 300 })
  t.eq(r.code, 0, r.stderr)
  local threads, frames, parallel = r.stdout:match("^(%d+)%s+(%d+)%s+(%d+)")
  t.eq(tonumber(threads), default_threads(), "the CPUs, at most 4")
  t.ok(tonumber(frames) > 1, "frames: " .. tostring(frames))
  t.eq(tonumber(parallel), tonumber(threads) > 1 and tonumber(frames) or 0, "frames decoded by the workers")
  t.eq(h.psql(pg.url(target), "SELECT count(*) FROM wide;"), "160000\n", "every row restored")
  h.dropdb(target)
end)

t.test("verify leaves the hand-off after zstd out only where the manifest says the frames decode apart", function()
  local verify = require "lib.verify"
  local function src(layers, compression) return { layers = layers, manifest = { compression = compression } } end
  local zstd4 = { method = "zstd", level = 3, frame_size = 4 << 20 }
  t.eq(verify.decoded_apart({}, src({ "zstd", "pgdmp" }, zstd4)), true, "4 MiB frames")
  t.eq(verify.decoded_apart({ threads = 1 }, src({ "zstd", "pgdmp" }, zstd4)), false, "--threads 1")
  t.eq(verify.decoded_apart({}, src({ "zstd", "pgdmp" }, { method = "zstd", level = 3 })), false,
    "an older backup (one frame)")
  t.eq(verify.decoded_apart({}, src({ "zstd", "pgdmp" }, { method = "zstd", frame_size = 16 << 20 })), false,
    "16 MiB frames (may be decoded in sequence)")
  t.eq(verify.decoded_apart({}, src({ "age", "zstd", "pgdmp" }, zstd4)), false, "decryption runs inline")
  t.eq(verify.decoded_apart({}, { layers = { "zstd", "pgdmp" } }), false, "no manifest")
end)
