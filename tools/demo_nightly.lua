-- The nightly part of `make demo` (called by tools/demo.lua): a configuration
-- file with two environments, `pgvault nightly` twice, list, prune --dry-run,
-- the restore drill, and a failed run (the bucket stopped) whose "fail" ping
-- the demo's own little HTTP listener receives.
-- ctx: step, pgvault, check, indent, base, env, url (the database), root,
-- recipient (an age recipient whose identity is base/backup.key).
local fs = require "pgvault.fs"
local s3 = require "pgvault.s3"
local services = require "harness.services"
local httpserver = require "harness.httpserver"

return function(ctx)
  local step, pgvault, check = ctx.step, ctx.pgvault, ctx.check

  step("A configuration file with two environments, and a listener for the pings")
  -- A bucket server of its own for "prod", so that the demo can stop it later.
  local bucket, handle = services.start_s3(ctx.base .. "/s3-prod", ctx.root)
  local opts = { endpoint_url = bucket.endpoint, region = bucket.region, access_key_id = bucket.access_key,
    secret_access_key = bucket.secret_key }
  s3.create_bucket("s3://nightly-backups", opts)
  local listener <close> = httpserver.start()
  listener:routes({ { path = "/ping/*", responses = { { status = 200, body = "OK" } } } })
  local ping = listener:url("/ping/5f0c2b1e-8a7d-4c3b-9e21-0d4f6a7b8c9d")
  ctx.env.DEMO_DB_URL = ctx.url
  ctx.env.DEMO_PING_URL = ping
  local conf = string.format([[
-- pgvault.conf.lua: what each environment backs up, where, and how long it keeps it.
-- Secrets are references (env "NAME", file "PATH"): none is written here.
defaults { keep_daily = 7, keep_weekly = 4 }

environment "local" {
  db = env "DEMO_DB_URL",
  to = "db_backups",
  drill_every = "never",
}

environment "prod" {
  db = env "DEMO_DB_URL",
  to = "s3://nightly-backups/prod/",
  endpoint_url = %q,
  recipient = %q,
  identity = "backup.key",
  ping = env "DEMO_PING_URL",
  keep_last = 2,
}
]], bucket.endpoint, ctx.recipient)
  fs.write_file(ctx.base .. "/pgvault.conf.lua", conf, { mode = 384 })
  ctx.indent(conf)
  -- The prod bucket's keys, as the environment would give them.
  ctx.env.AWS_ACCESS_KEY_ID, ctx.env.AWS_SECRET_ACCESS_KEY = bucket.access_key, bucket.secret_key
  pgvault({ "config", "check" })

  step("pgvault nightly --env prod: lock, ping, backup, read-back, prune, restore drill, ping")
  local r = pgvault({ "nightly", "--env", "prod" })
  check(r.stdout:match("^nightly prod: ok"), "the run succeeded")
  check(r.stdout:match("restore drill restored into"), "the weekly restore drill ran (first run of the week)")
  local first = listener:requests()
  check(#first == 2 and first[1].url:match("/start%?rid=") and first[2].url:match("%?rid="),
    "the listener got /start and the success ping")

  step("The next night: the drill is done for this week")
  r = pgvault({ "nightly", "--env", "prod", "--json" })
  local summary = require("cjson").decode(r.stdout)
  check(summary.ok, "ok again")
  pgvault({ "list", "--from", "s3://nightly-backups/prod/", "-i", "backup.key", "--endpoint-url", bucket.endpoint })

  step("What prune would remove with stricter rules (flags override the file)")
  r = pgvault({ "prune", "--env", "prod", "--keep-last", "1", "--keep-daily", "0", "--keep-weekly", "0", "--dry-run" })
  check(r.stdout:match("\nremove "), "the older backup would go")

  step("The bucket goes down: the run fails, and says so to the monitor")
  handle() -- services.start_s3 gives the function that stops the server
  listener:reset()
  listener:routes({ { path = "/ping/*", responses = { { status = 200, body = "OK" } } } })
  pgvault({ "nightly", "--env", "prod", "--retries", "2" }, 1)
  local pings = listener:requests()
  local fail = pings[#pings]
  check(fail and fail.url:match("/fail%?rid="), "the listener received the fail ping")
  io.write("   the fail ping's body (the log tail):\n")
  ctx.indent(fail.body:gsub("[^\n]+", "   | %0"))
  check(not fail.body:find(bucket.secret_key, 1, true), "no secret in it")
end
