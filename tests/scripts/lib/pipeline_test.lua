-- covers: scripts/lib/pipeline.lua
-- lib.pipeline: a stage list as a workflow writes it (steps left out as
-- false, a step's several stages as a list) into what stream.run takes.
local t = require "harness.testing"
local pipeline = require "lib.pipeline"
local stream = require "pgvault.stream"

t.test("flatten keeps the order, drops false, opens nested lists", function()
  local a, b, c, d = stream.sha256 {}, stream.counter {}, stream.sha256 {}, stream.discard()
  local marker = setmetatable({}, {})
  local out = pipeline.flatten { a, false, { b, { c }, {} }, marker, d }
  t.eq(#out, 4 + 1)
  t.ok(out[1] == a and out[2] == b and out[3] == c and out[4] == marker and out[5] == d)
  local r = stream.run(pipeline.flatten { stream.string("x"), false, { stream.sha256 { label = "s" } }, d })
  t.eq(r.s.bytes, 1)
  t.eq(pipeline.progress():name(), "progress")
end)
