-- covers: bindings/pg/conninfo.c
-- The connection-string fuzz corpus (tests/fuzz/conninfo_fuzz.c) replays
-- through the Lua surface: whatever the text, pg.parse_conninfo returns
-- its settings or refuses it with one line of kind "usage"; what
-- dump.conninfo writes back parses to the same settings (without the
-- secrets unless asked for them), so a child program connects where the
-- user meant.
local t = require "harness.testing"
local h = require "harness.env"
local fs = require "pgvault.fs"
local pg = require "pgvault.pg"
local dump = require "pgvault.dump"

local SECRET = { password = true, sslpassword = true, oauth_client_secret = true }

local function without_secrets(s)
  local out = {}
  for k, v in pairs(s) do if not SECRET[k] then out[k] = v end end
  return out
end

local function empty(s) return next(s) == nil end

t.test("the fuzz corpus replays: settings that write back to themselves, or one usage error", function()
  local dir = h.root .. "/tests/fuzz/conninfo_corpus"
  local names = fs.listdir(dir)
  t.ok(#names >= 100, "corpus present: " .. #names)
  local parsed, refused = 0, 0
  for _, name in ipairs(names) do
    -- (the target reads up to the first NUL, as a C string)
    local text = fs.read_file(dir .. "/" .. name):match("^[^%z]*")
    local ok, s = pcall(pg.parse_conninfo, text)
    if ok then
      parsed = parsed + 1
      local plain, _, has_password = dump.conninfo(text)
      t.eq(has_password, s.password ~= nil, name .. ": says whether it holds a password")
      if not empty(s) then
        t.eq(pg.parse_conninfo(plain), without_secrets(s), name .. ": written back without secrets")
        t.eq(pg.parse_conninfo((dump.conninfo(text, { password = true }))), s, name .. ": written back whole")
      end
    else
      refused = refused + 1
      t.eq(type(s) == "table" and s.kind, "usage", name .. ": " .. tostring(type(s) == "table" and s.message or s))
      t.no_match(tostring(s.message), "\n", name .. ": one line")
    end
  end
  t.ok(parsed >= 10 and refused >= 10, string.format("both outcomes seen (%d parsed, %d refused)", parsed, refused))
end)
