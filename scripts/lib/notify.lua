-- Telling someone how a run went, on pgvault.http:
--
--   local n = notify.new{ ping = URL, webhook = URL, webhook_secret = S, ca_bundle = FILE }
--   n:start()                      -- healthchecks.io: URL/start
--   n:finish(summary, tail)        -- URL (success, the summary line as body) or URL/fail (the log
--                                  -- tail as body); the webhook gets the JSON summary
--
-- The healthchecks.io convention: URL/start when a run begins, URL when it
-- succeeds, URL/fail when it fails, each with ?rid=RUN-ID so that the service
-- pairs them (and measures the run's duration). The webhook is a POST of the
-- JSON summary; with a shared secret it carries X-Pgvault-Signature-256:
-- sha256=HMAC-SHA256(secret, body), as GitHub signs its webhooks. A ping
-- URL is its own credential: it is masked in every message. A notification
-- that cannot be delivered is logged and never fails the run.
local http = require "pgvault.http"
local pgvault = require "pgvault"
local json = require "lib.json"

local notify = {}

notify.TIMEOUT = 10
notify.ATTEMPTS = 3
notify.MAX_BODY = 100000 -- healthchecks.io keeps the first 100 kB of a ping's body

local Notifier = {}
Notifier.__index = Notifier

local function uuid4()
  local f = assert(io.open("/dev/urandom", "rb"))
  local b = { f:read(16):byte(1, 16) }
  f:close()
  b[7] = (b[7] & 0x0f) | 0x40
  b[9] = (b[9] & 0x3f) | 0x80
  local hex = {}
  for i, v in ipairs(b) do hex[i] = string.format("%02x", v) end
  local s = table.concat(hex)
  return s:sub(1, 8) .. "-" .. s:sub(9, 12) .. "-" .. s:sub(13, 16) .. "-" .. s:sub(17, 20) .. "-" .. s:sub(21)
end

local function check_url(key, url)
  if url and not url:match("^https?://") then
    pgvault.raise("usage", string.format("--%s must be an http(s):// URL", key))
  end
end

function notify.new(o)
  check_url("ping", o.ping)
  check_url("webhook", o.webhook)
  if o.webhook_secret and not o.webhook then
    pgvault.raise("usage", "--webhook-secret needs --webhook URL")
  end
  return setmetatable({ ping = o.ping and o.ping:gsub("/+$", ""), webhook = o.webhook,
    secret = o.webhook_secret, ca_bundle = o.ca_bundle, rid = uuid4(), delivered = {} }, Notifier)
end

-- Sends one request; logs (and returns false) on any failure. Runs even
-- after Ctrl-C: the "fail" ping is how an interrupted run is heard of.
-- The ping URL is a client's base (masked in messages: it is a credential).
function Notifier:send(what, base, req)
  local ok, res = pcall(pgvault.uninterrupted, function()
    local c <close> = http.client { base_url = base, secret_url = true, timeout = notify.TIMEOUT,
      max_attempts = notify.ATTEMPTS, retry_base_ms = 500, ca_bundle = self.ca_bundle }
    req.retry_statuses = { 500, 502, 504 } -- a ping or a summary sent twice does no harm
    return c:request(req)
  end)
  if ok then
    self.delivered[#self.delivered + 1] = what
    log.debug("%s delivered (HTTP %d)", what, res.status)
    return true
  end
  log.warn("%s could not be delivered: %s (the run itself is not affected)", what,
    pgvault.is_error(res) and res.message or tostring(res))
  return false
end

function Notifier:start()
  if not self.ping then return end
  self:send("ping start", self.ping, { method = "POST", path = "/start", query = { rid = self.rid }, body = "" })
end

-- The last lines of the log, within healthchecks.io's body limit.
local function tail_text(lines)
  local text = table.concat(lines or {}, "\n")
  if #text > notify.MAX_BODY then text = "...\n" .. text:sub(-notify.MAX_BODY + 4) end
  return pgvault.redact(text)
end

-- summary: the run's summary table (ok, line, …); tail: log lines.
function Notifier:finish(summary, tail)
  if self.ping then
    local body = summary.ok and summary.line or (summary.line .. "\n\n" .. tail_text(tail))
    self:send(summary.ok and "ping success" or "ping fail", self.ping, { method = "POST",
      path = summary.ok and "" or "/fail", query = { rid = self.rid }, body = pgvault.redact(body),
      headers = { ["Content-Type"] = "text/plain; charset=utf-8" } })
  end
  if self.webhook then
    local payload = {}
    for k, v in pairs(summary) do payload[k] = v end
    if not summary.ok then payload.log = tail end
    local body = pgvault.redact(json.encode(payload))
    local headers = { ["Content-Type"] = "application/json", ["X-Pgvault-Event"] = "nightly" }
    if self.secret then headers["X-Pgvault-Signature-256"] = "sha256=" .. http.hmac_sha256(self.secret, body) end
    self:send("webhook", self.webhook, { method = "POST", body = body, headers = headers })
  end
end

return notify
