-- covers: scripts/lib/fly.lua scripts/lib/neon.lua
-- lib.fly's token handling and lib.neon's URL helpers, as the vendors' CLIs
-- behave (flyctl's tokens.Parse and FlapsHeader; neonctl's pooled host).
local t = require "harness.testing"
local fly = require "lib.fly"
local neon = require "lib.neon"

t.test("Fly tokens: macaroons as FlyV1, others as Bearer, a pasted scheme dropped", function()
  t.eq(fly.authorization("fm2_abc"), "FlyV1 fm2_abc")
  t.eq(fly.authorization("fm1r_x"), "FlyV1 fm1r_x")
  t.eq(fly.authorization("fm1a_x"), "FlyV1 fm1a_x")
  t.eq(fly.authorization("  FlyV1 fm2_a,fm2_b \n"), "FlyV1 fm2_a,fm2_b", "a token copied with its scheme")
  t.eq(fly.authorization("Bearer FlyV1 fm2_a"), "FlyV1 fm2_a", "schemes stripped however many")
  t.eq(fly.authorization("bearer fo1_personal"), "Bearer fo1_personal")
  t.eq(fly.authorization("fo1_user, fm2_mac"), "FlyV1 fm2_mac", "macaroons win over user tokens, as flyctl")
  t.eq(fly.authorization("abcdef0123"), "Bearer abcdef0123")
  t.raises(function() fly.authorization(" Bearer  ") end, "empty")
end)

t.test("Neon hosts and URLs: -pooler after the endpoint id, passwords redacted", function()
  t.eq(neon.pooled_host("ep-cool-darkness-123456.us-east-2.aws.neon.tech"),
    "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech")
  t.eq(neon.pooled_host("ep-x-pooler.eu-central-1.aws.neon.tech"), "ep-x-pooler.eu-central-1.aws.neon.tech",
    "already pooled")
  t.eq(neon.redact("postgresql://alex:AbC123dEf@ep-x.neon.tech/db?sslmode=require&channel_binding=require"),
    "postgresql://alex:****@ep-x.neon.tech/db?sslmode=require&channel_binding=require")
  t.eq(neon.redact("postgresql://alex@ep-x.neon.tech/db"), "postgresql://alex@ep-x.neon.tech/db")
end)

t.test("clients refuse to start without their keys, naming where to get them", function()
  local saved = { os.getenv("NEON_API_KEY") }
  t.eq(saved[1], nil, "the test runs without NEON_API_KEY")
  local e = t.raises(function() neon.client{ project = "p-1" } end, "NEON_API_KEY")
  t.eq(e.kind, "config")
  t.raises(function() neon.client{ project = "Bad Project", api_key = "k" } end, "project id")
  e = t.raises(function() fly.client{ app = "a" } end, "FLY_API_TOKEN")
  t.eq(e.kind, "config")
end)
