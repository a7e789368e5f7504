-- JSON for what pgvault writes and reads itself (manifests, --json output):
-- lua-cjson underneath, with what it lacks here. Integers are written
-- exactly (cjson prints 2^53 as 9.007199254741e+15) and read back as
-- integers (cjson 2.1 reads every number as a float); a table marked with
-- json.array is written as an array even when empty (cjson writes {}).
local cjson = require "cjson"

local json = {}

-- Marks a table to be written as a JSON array even when empty.
local ARRAY = {}
function json.array(t) return setmetatable(t or {}, ARRAY) end

local function is_array(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t and (n > 0 or getmetatable(t) == ARRAY)
end

local function sorted_keys(t, rank)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ra, rb = rank and rank[a] or math.huge, rank and rank[b] or math.huge
    if ra ~= rb then return ra < rb end
    return tostring(a) < tostring(b)
  end)
  return keys
end

local function scalar(v)
  if math.type(v) == "integer" then return string.format("%d", v) end
  return cjson.encode(v)
end

-- indent: nil for one line, else the current indentation (pretty output).
local function encode(v, rank, indent)
  if type(v) ~= "table" then return scalar(v) end
  if next(v) == nil then return is_array(v) and "[]" or "{}" end
  local inner = indent and (indent .. "  ")
  local parts = {}
  local array = is_array(v)
  if array then
    for i = 1, #v do parts[i] = (inner or "") .. encode(v[i], rank, inner) end
  else
    for _, k in ipairs(sorted_keys(v, rank)) do
      parts[#parts + 1] = (inner or "") .. cjson.encode(tostring(k)) .. (inner and ": " or ":")
        .. encode(v[k], rank, inner)
    end
  end
  local open, close = array and "[" or "{", array and "]" or "}"
  if not indent then return open .. table.concat(parts, ",") .. close end
  return open .. "\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. close
end

-- opts: pretty (two-space indentation), order (keys written first, in this
-- order, at every level; the others follow alphabetically).
function json.encode(v, opts)
  opts = opts or {}
  local rank
  if opts.order then
    rank = {}
    for i, k in ipairs(opts.order) do rank[k] = i end
  end
  return encode(v, rank, opts.pretty and "" or nil)
end

local function integers(v, depth)
  if depth > 1000 then error("nested too deeply", 0) end
  for k, x in pairs(v) do
    if type(x) == "table" then
      integers(x, depth + 1)
    elseif math.type(x) == "float" and x == math.floor(x) and math.abs(x) <= 2 ^ 53 then
      v[k] = math.tointeger(x)
    end
  end
  return v
end

-- The value of `text`, or raises (a plain string) when it is not JSON.
-- Whole numbers come back as integers (within 2^53, where a double is exact).
function json.decode(text)
  local v = cjson.decode(text)
  if type(v) == "table" then return integers(v, 0) end
  if math.type(v) == "float" and v == math.floor(v) and math.abs(v) <= 2 ^ 53 then return math.tointeger(v) end
  return v
end

json.null = cjson.null

return json
