-- Helper of bench/verify.lua: the archive verifier tap on standard input,
-- as it runs inside a backup pipeline (bytes pass through to a discard sink).
local archive = require "pgvault.archive"
local stream = require "pgvault.stream"
local r = stream.run { stream.stdin(), archive.verifier(), stream.discard() }
io.stdout:write(string.format("%d rows, %d bytes\n", r.archive.totals.rows, r.archive.bytes))
