-- The S3 options of the commands that talk to a bucket, named as in the aws
-- CLI and declared once (lib.config's keys), their checks, and their
-- translation into pgvault.s3 settings. Only the commands that upload take
-- --part-size and --parallel: an option a command would ignore is not
-- offered.
local config = require "lib.config"
local fs = require "pgvault.fs"
local pgvault = require "pgvault"

local s3cli = {}

-- Every command that reaches a bucket, and those that upload to one.
s3cli.SETTINGS = { "endpoint_url", "region", "profile", "ca_bundle", "retries", "timeout" }
s3cli.UPLOADS = { "part_size", "parallel" }

-- Appends the S3 options to a cli.parse option list; how.upload adds
-- --part-size and --parallel.
function s3cli.with_options(options, how)
  local out = {}
  for _, o in ipairs(options) do out[#out + 1] = o end
  for _, o in ipairs(config.options(s3cli.SETTINGS)) do out[#out + 1] = o end
  if how and how.upload then
    for _, o in ipairs(config.options(s3cli.UPLOADS)) do out[#out + 1] = o end
  end
  return out
end

local function usage(fmt, ...)
  pgvault.raise("usage", string.format(fmt, ...))
end

-- A number given as a flag (a string) or by lib.config, checked against
-- its key's range there (one message for both ways of giving it).
local function whole(v, key)
  if v == nil then return nil end
  return config.from_flag(config.BY_NAME[key], { (key:gsub("_", "-")) }, v)
end

local function check_endpoint(url)
  if url ~= nil and not tostring(url):match("^https?://[^/]") then
    usage("--endpoint-url must start with https:// (or http://), not '%s'", tostring(url))
  end
  return url
end

local function check_file(path, flag)
  if path == nil then return nil end
  local st = fs.stat(path)
  if not st then usage("--%s %s: no such file", flag, path) end
  if st.type == "dir" then usage("--%s %s: a directory, not a file of certificates", flag, path) end
  return path
end

-- pgvault.s3 settings (and writer options) from parsed command-line
-- options, plus `extra`. Raises "usage" naming the flag for a bad value.
function s3cli.opts(o, extra)
  local part = whole(o.part_size, "part_size")
  local t = {
    endpoint_url = check_endpoint(o.endpoint_url), region = o.region, profile = o.profile,
    ca_bundle = check_file(o.ca_bundle, "ca-bundle"),
    part_size = part and part * 1024 * 1024 or nil, parallel = whole(o.parallel, "parallel"),
    max_attempts = whole(o.retries, "retries"), timeout = whole(o.timeout, "timeout"),
  }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

function s3cli.is_s3(url)
  return type(url) == "string" and url:sub(1, 5) == "s3://"
end

return s3cli
