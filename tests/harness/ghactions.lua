-- Just enough of a GitHub Actions workflow to run its steps in a test: a
-- reader for the YAML subset workflows use (block mappings, block
-- sequences, literal blocks with |, plain and quoted scalars, comments) and
-- the ${{ secrets.X }} / ${{ vars.X }} / ${{ env.X }} expressions.
local ghactions = {}

local function strip_comment(line)
  local out, quote = {}, nil
  for i = 1, #line do
    local c = line:sub(i, i)
    if quote then
      if c == quote then quote = nil end
    elseif c == '"' or c == "'" then
      quote = c
    elseif c == "#" and (i == 1 or line:sub(i - 1, i - 1):match("%s")) then
      break
    end
    out[#out + 1] = c
  end
  return (table.concat(out):gsub("%s+$", ""))
end

local function scalar(s)
  s = s:match("^%s*(.-)%s*$")
  local q = s:match('^"(.*)"$') or s:match("^'(.*)'$")
  if q then return q end
  if s == "{}" then return {} end
  return s
end

-- Parses the lines from index i whose indentation is `indent`; returns the
-- value and the next index.
local function parse_block(lines, i, indent)
  local first = lines[i]
  if not first then return nil, i end
  local is_seq = first.text:sub(1, 2) == "- "
  local out = {}
  while lines[i] and lines[i].indent == indent do
    local text = lines[i].text
    if is_seq then
      if text:sub(1, 2) ~= "- " then break end
      -- A sequence item: its content sits two columns further in.
      lines[i] = { indent = indent + 2, text = text:sub(3), raw = lines[i].raw }
      local item
      item, i = parse_block(lines, i, indent + 2)
      out[#out + 1] = item
    else
      local key, rest = text:match("^([%w_%-%.]+):%s*(.*)$")
      if not key then error("cannot read YAML line: " .. text) end
      i = i + 1
      if rest == "|" then
        local block, base = {}, nil
        while lines[i] and (lines[i].indent > indent or lines[i].text == "") do
          base = base or lines[i].indent
          block[#block + 1] = lines[i].raw:sub(base + 1)
          i = i + 1
        end
        out[key] = table.concat(block, "\n") .. "\n"
      elseif rest ~= "" then
        out[key] = scalar(rest)
      elseif lines[i] and lines[i].indent > indent then
        out[key], i = parse_block(lines, i, lines[i].indent)
      else
        out[key] = ""
      end
    end
  end
  return out, i
end

function ghactions.parse(text)
  local lines = {}
  local in_block = false
  for raw in (text .. "\n"):gmatch("([^\n]*)\n") do
    local indent = #raw:match("^ *")
    local body = raw:sub(indent + 1)
    -- Literal blocks keep their lines (a '#' in a script is not a comment).
    local text_ = in_block and body or strip_comment(body)
    if text_ ~= "" or in_block then
      lines[#lines + 1] = { indent = indent, text = text_, raw = raw }
    end
    if not in_block and text_:match(":%s*|$") then
      in_block = indent
    elseif in_block and text_ ~= "" and indent <= in_block and not text_:match(":%s*|$") then
      in_block = false
    end
  end
  -- Trailing empty lines of literal blocks carry no meaning here.
  while lines[#lines] and lines[#lines].text == "" do lines[#lines] = nil end
  local doc = parse_block(lines, 1, 0)
  return doc
end

-- Replaces ${{ secrets.X }}, ${{ vars.X }} and ${{ env.X }}.
function ghactions.expand(s, ctx)
  return (s:gsub("%${{%s*([%w_]+)%.([%w_]+)%s*}}", function(scope, name)
    local t = ctx[scope] or {}
    return t[name] or ""
  end))
end

return ghactions
