-- Readable printing of Lua values for the REPL and -e: tables nested a few
-- levels, keys sorted, strings quoted, error objects shown as errors.
local pretty = {}

local MAX_DEPTH = 4
local MAX_ITEMS = 200

local function is_identifier(s)
  return type(s) == "string" and s:match("^[%a_][%w_]*$") ~= nil
end

local function sort_keys(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function render(v, depth, seen, indent)
  local t = type(v)
  if t == "string" then return string.format("%q", v):gsub("\\\n", "\\n") end
  if t ~= "table" then return tostring(v) end
  local mt = getmetatable(v)
  if mt and mt.__tostring then return "<" .. tostring(v) .. ">" end
  if seen[v] then return "<cycle>" end
  if depth >= MAX_DEPTH then return "{...}" end
  seen[v] = true
  local n = #v
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, sort_keys)
  local parts = {}
  for i = 1, math.min(n, MAX_ITEMS) do parts[#parts + 1] = render(v[i], depth + 1, seen, indent .. "  ") end
  if n > MAX_ITEMS then parts[#parts + 1] = string.format("... (%d more)", n - MAX_ITEMS) end
  for i, k in ipairs(keys) do
    if i > MAX_ITEMS then
      parts[#parts + 1] = string.format("... (%d more)", #keys - MAX_ITEMS)
      break
    end
    local ks = is_identifier(k) and k or ("[" .. render(k, depth + 1, seen, indent) .. "]")
    parts[#parts + 1] = ks .. " = " .. render(v[k], depth + 1, seen, indent .. "  ")
  end
  seen[v] = nil
  if #parts == 0 then return "{}" end
  local flat = "{ " .. table.concat(parts, ", ") .. " }"
  if #flat <= 78 and not flat:find("\n") then return flat end
  return "{\n" .. indent .. "  " .. table.concat(parts, ",\n" .. indent .. "  ") .. "\n" .. indent .. "}"
end

function pretty.format(v)
  return (render(v, 0, {}, ""))
end

function pretty.print(...)
  local n = select("#", ...)
  local out = {}
  for i = 1, n do out[i] = pretty.format((select(i, ...))) end
  io.stdout:write(table.concat(out, "\t"), "\n")
  io.stdout:flush()
end

return pretty
