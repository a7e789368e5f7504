-- covers: host/runtime.c host/error.c
-- The runtime: strict globals, error objects, module loading.
local t = require "harness.testing"
local h = require "harness.env"
local pgvault = require "pgvault"

t.test("reading an undeclared global raises", function()
  t.raises(function() return rawget(_G, "x") or _G.undeclared_thing end, "variable 'undeclared_thing' is not declared")
end)

t.test("assigning a new global inside a function raises", function()
  t.raises(function() _G.brand_new = 1 end, "assignment to undeclared global 'brand_new'")
end)

t.test("globals assigned in a main chunk are declared", function()
  local r = h.pgvault({ "-e", "x = 5; local function f() return x end; return f()" })
  t.eq(r.stdout, "5\n")
  r = h.pgvault({ "-e", "local function f() return y end; return f()" })
  t.eq(r.code, 1)
  t.match(r.stderr, "variable 'y' is not declared")
end)

t.test("error objects carry kind, message, fields and print their message", function()
  local e = pgvault.error("pg", "connection refused", { sqlstate = "08006", retryable = true })
  t.eq(e.kind, "pg")
  t.eq(e.sqlstate, "08006")
  t.eq(tostring(e), "connection refused")
  t.ok(pgvault.is_error(e), "is_error")
  t.ok(not pgvault.is_error({ kind = "pg" }), "a plain table is not an error object")
  local err = t.raises(function() pgvault.raise("io", "disk full", { path = "/x" }) end, "disk full")
  t.eq(err.path, "/x")
end)

t.test("error messages are redacted", function()
  local e = pgvault.error("pg", "cannot connect to postgresql://bob:hunter2@db/x")
  t.eq(e.message, "cannot connect to postgresql://bob:***@db/x")
end)

t.test("every binding is reachable with require", function()
  for _, name in ipairs({ "stream", "proc", "fs" }) do
    t.eq(type(require("pgvault." .. name)), "table", name)
  end
  t.eq(type(require("cjson").encode), "function", "cjson is built in")
end)

t.test("the binary works without its source tree (built-in scripts)", function()
  local d = h.tmpdir()
  local r = h.pgvault({ "scripts" }, { cwd = d })
  t.eq(r.code, 0)
  t.match(r.stdout, "scripts")
end)

t.test("error kinds: the documented list, an unknown kind refused", function()
  local kinds = {}
  for _, k in ipairs(pgvault.error_kinds) do kinds[k] = true end
  for _, k in ipairs({ "io", "exists", "pg", "child", "s3", "http", "crypto", "archive", "verify", "trust",
    "config", "usage", "interrupted", "internal" }) do
    t.ok(kinds[k], "kind " .. k)
  end
  t.eq(#pgvault.error_kinds, 14, "no other kinds")
  t.raises(function() pgvault.error("oops", "x") end, "bad argument #1 to 'error' %(unknown error kind 'oops'")
  t.raises(function() pgvault.raise("fs", "x") end, "unknown error kind 'fs'")
  t.eq(pgvault.error("exists", "taken").kind, "exists")
end)

-- Every kind the sources raise is on the list (C: pv_err_set / pv_raise /
-- pv_err_setv; Lua: pgvault.raise / pgvault.error and local fail() helpers).
t.test("every kind raised in host/, bindings/ and scripts/ is a documented kind", function()
  local fs = require "pgvault.fs"
  local known = {}
  for _, k in ipairs(pgvault.error_kinds) do known[k] = true end
  local function walk(dir, out)
    for _, n in ipairs(fs.listdir(dir)) do
      local p = dir .. "/" .. n
      if fs.stat(p).type == "dir" then walk(p, out) elseif n:match("%.[ch]$") or n:match("%.lua$") then
        out[#out + 1] = p
      end
    end
    return out
  end
  local seen = 0
  for _, top in ipairs({ "host", "bindings", "scripts" }) do
    for _, p in ipairs(walk(h.root .. "/" .. top, {})) do
      local src = fs.read_file(p)
      for _, pat in ipairs({ 'pv_err_set%([^,]+, "([%w_]+)"', 'pv_raise%(L, "([%w_]+)"', 'raise%("([%w_]+)"',
        'pgvault%.error%("([%w_]+)"', 'fail%("([%w_]+)"' }) do
        for kind in src:gmatch(pat) do
          seen = seen + 1
          t.ok(known[kind], string.format("%s raises kind '%s'", p:sub(#h.root + 2), kind))
        end
      end
    end
  end
  t.ok(seen > 50, "the scan found the raises (" .. seen .. ")")
end)
