-- The S3 options every workflow that talks to a bucket shares, named as in
-- the aws CLI, and their translation into pgvault.s3 options.
local s3cli = {}

s3cli.OPTIONS = {
  { "endpoint-url", nil, "URL", "S3 endpoint, e.g. https://s3.us-west-004.backblazeb2.com (AWS_ENDPOINT_URL)" },
  { "region", nil, "NAME", "region for signing (AWS_REGION, default us-east-1)" },
  { "profile", nil, "NAME", "profile from ~/.aws/credentials and ~/.aws/config (AWS_PROFILE)" },
  { "ca-bundle", nil, "FILE", "also trust the CA certificates in FILE (AWS_CA_BUNDLE)" },
  { "part-size", nil, "MiB", "multipart part size in MiB (default 8, at least 5)" },
  { "parallel", nil, "N", "parts in flight at once (default 4)" },
  { "retries", nil, "N", "attempts per request before giving up (default 6)" },
}

-- Appends the S3 options to a cli.parse option list.
function s3cli.with_options(options)
  local out = {}
  for _, o in ipairs(options) do out[#out + 1] = o end
  for _, o in ipairs(s3cli.OPTIONS) do out[#out + 1] = o end
  return out
end

local function number(v, what)
  if v == nil then return nil end
  local n = tonumber(v)
  if not n or n ~= math.floor(n) or n < 1 then
    require("pgvault").raise("usage", string.format("--%s needs a positive whole number, not '%s'", what, v))
  end
  return math.tointeger(n)
end

-- pgvault.s3 options from parsed command-line options, plus `extra`.
function s3cli.opts(o, extra)
  local part = number(o.part_size, "part-size")
  local t = {
    endpoint_url = o.endpoint_url, region = o.region, profile = o.profile, ca_bundle = o.ca_bundle,
    part_size = part and part * 1024 * 1024 or nil, parallel = number(o.parallel, "parallel"),
    max_attempts = number(o.retries, "retries"),
  }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

function s3cli.is_s3(url)
  return type(url) == "string" and url:sub(1, 5) == "s3://"
end

return s3cli
