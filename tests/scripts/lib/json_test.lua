-- covers: scripts/lib/json.lua
-- lib.json: integers written exactly and read back as integers (cjson 2.1
-- wrote 2^53 as 9.007199254741e+15 and read every number as a float: sizes
-- printed as 34387.0), empty arrays stay arrays ("problems": [] was {}
-- or missing), a stable key order, one line or indented.
local t = require "harness.testing"
local json = require "lib.json"

t.test("integers exactly, both ways", function()
  t.eq(json.encode({ n = (1 << 53) + 1 }), '{"n":9007199254740993}')
  t.eq(json.encode(34387), "34387")
  local v = json.decode('{"a": 34387, "b": 1.5, "c": [1, 2.0], "d": 1e400}')
  t.eq(math.type(v.a), "integer")
  t.eq(tostring(v.a), "34387")
  t.eq(math.type(v.b), "float")
  t.eq(math.type(v.c[2]), "integer")
  t.eq(math.type(v.d), "float", "too big for an integer stays a float")
  t.eq(math.type(json.decode("12")), "integer")
end)

t.test("arrays: marked empty ones, lists; objects with a stable order", function()
  t.eq(json.encode({ problems = json.array() }), '{"problems":[]}')
  t.eq(json.encode({}), "{}")
  t.eq(json.encode({ 1, "two", { x = true } }), '[1,"two",{"x":true}]')
  t.eq(json.encode({ b = 1, a = 2, c = 3 }, { order = { "c" } }), '{"c":3,"a":2,"b":1}')
  t.eq(json.encode({ a = { 1 } }, { pretty = true }), '{\n  "a": [\n    1\n  ]\n}')
  t.eq(json.encode("line\nbreak \"q\""), '"line\\nbreak \\"q\\""')
end)

t.test("decode raises on what is not JSON", function()
  t.raises(function() json.decode("{nope") end)
  t.raises(function() json.decode(string.rep("[", 2000) .. string.rep("]", 2000)) end)
end)
