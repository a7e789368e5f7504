-- Rewriting one variable of a dotenv file (.env.production) in place:
--   require("lib.envfile").set(".env.production", "DATABASE_URL", url)
-- Every other byte stays as it was: other lines and their order, comments,
-- blank lines, an `export ` prefix, the spacing around `=`, the value's
-- quoting ('…', "…" or none), a trailing `# comment`, CRLF or LF line
-- endings, a UTF-8 BOM, the missing newline at the end. Every assignment of
-- the key is rewritten (dotenv readers and `fly secrets import` take the
-- last one; none may disagree). A missing key is appended. Multi-line
-- values ("""…""" as `fly secrets import` reads them, or a "…" spanning
-- lines) are skipped over, never mistaken for assignments. The file is
-- replaced atomically (a temporary file renamed over it, fsynced) with its
-- mode kept; through a symbolic link, the file it points to is rewritten.
local fs = require "pgvault.fs"
local pgvault = require "pgvault"

local envfile = {}

local KEY = "[%a_][%w_%.%-]*"

-- Splits `text` into { {body, eol}, ... } keeping each line's ending.
local function lines_of(text)
  local out = {}
  local pos = 1
  while pos <= #text do
    local nl = text:find("\n", pos, true)
    local line = nl and text:sub(pos, nl - 1) or text:sub(pos)
    local eol = nl and "\n" or ""
    if line:sub(-1) == "\r" then
      line, eol = line:sub(1, -2), "\r" .. eol
    end
    out[#out + 1] = { body = line, eol = eol }
    pos = (nl or #text) + 1
  end
  return out
end

-- The parts of an assignment line: prefix (up to and including `=` and the
-- spaces after it), the value as written, what follows it (spaces and a
-- comment), the unquoted value and the quote character. nil for other lines.
local function parse(body)
  local bom = body:sub(1, 3) == "\239\187\191" and body:sub(1, 3) or ""
  local lead, rest = body:match("^(" .. bom .. "%s*)(.*)$")
  local exp = rest:match("^export%s+") or ""
  rest = rest:sub(#exp + 1)
  local key, eq = rest:match("^(" .. KEY .. ")(%s*=%s*)")
  if not key then return nil end
  local prefix = lead .. exp .. key .. eq
  local v = body:sub(#prefix + 1)
  local q = v:sub(1, 1)
  if v:sub(1, 3) == '"""' then
    return { key = key, prefix = prefix, multiline = v:sub(4):find('"""', 1, true) == nil, skip = true }
  elseif q == '"' or q == "'" then
    local close = v:find(q, 2, true)
    if not close then return { key = key, prefix = prefix, multiline = q == '"', skip = true } end
    return { key = key, prefix = prefix, raw = v:sub(1, close), tail = v:sub(close + 1), value = v:sub(2, close - 1),
      quote = q }
  end
  local value, tail = v:match("^(.-)(%s+#.*)$")
  if not value then value, tail = v:match("^(.-)(%s*)$") end
  return { key = key, prefix = prefix, raw = value, tail = tail, value = value, quote = "" }
end

-- Calls fn(index, line, parsed) for each assignment, skipping the lines of
-- multi-line values.
local function each_assignment(lines, fn)
  local closing
  for i, l in ipairs(lines) do
    if closing then
      if l.body:find(closing, 1, true) then closing = nil end
    else
      local p = parse(l.body)
      if p and p.multiline then
        closing = l.body:sub(#p.prefix + 1, #p.prefix + 3) == '"""' and '"""' or '"'
      elseif p then
        fn(i, l, p)
      end
    end
  end
end

-- The value of `key` in `text` (the last assignment), or nil.
function envfile.get(text, key)
  local out
  each_assignment(lines_of(text), function(_, _, p)
    if p.key == key and not p.skip then out = p.value end
  end)
  return out
end

-- How `value` is written with the quote `q` of the old value ("" for none);
-- a character that quote cannot carry picks another.
local function quoted(value, q)
  if value:find("[\r\n]") then pgvault.raise("usage", "a value for an env file cannot span lines") end
  local unsafe_bare = value:find("%s#") or value:find("^%s") or value:find("%s$") or value:find("^[\"']")
  if q == "" and not unsafe_bare then return value end
  if q == "'" and not value:find("'", 1, true) then return "'" .. value .. "'" end
  if not value:find('"', 1, true) then return '"' .. value .. '"' end
  if not value:find("'", 1, true) then return "'" .. value .. "'" end
  pgvault.raise("usage", "a value with both quote characters cannot be written to an env file")
end

-- Returns the new text and { count = assignments rewritten, appended =
-- bool, old = the last old value }.
function envfile.replace(text, key, value)
  local lines = lines_of(text)
  local count, old = 0, nil
  each_assignment(lines, function(_, l, p)
    if p.key ~= key then return end
    if p.skip then
      pgvault.raise("usage", string.format("%s is a multi-line value in the env file; rewrite it by hand", key))
    end
    old = p.value
    l.body = p.prefix .. quoted(value, p.quote) .. p.tail
    count = count + 1
  end)
  local out = {}
  for i, l in ipairs(lines) do out[i] = l.body .. l.eol end
  local appended = false
  if count == 0 then
    local eol = (lines[1] and lines[1].eol:sub(1, 1) == "\r") and "\r\n" or "\n"
    if #lines > 0 and lines[#lines].eol == "" then out[#out] = out[#out] .. eol end
    out[#out + 1] = key .. "=" .. quoted(value, "") .. eol
    appended = true
  end
  return table.concat(out), { count = count, appended = appended, old = old }
end

-- Checks that the file at `path` can be rewritten (raises as set does);
-- returns its real path and stat.
function envfile.check(path, key)
  local real, why = fs.realpath(path)
  if not real then pgvault.raise("io", string.format("cannot rewrite %s in %s: %s", key, path, why)) end
  local st = fs.stat(real)
  if not st or st.type ~= "file" then
    pgvault.raise("io", string.format("cannot rewrite %s: %s is not a regular file", key, path))
  end
  -- Root may write anything: the mode says whether the owner meant it to change.
  if st.mode & 146 == 0 or not fs.writable(real) then
    pgvault.raise("io", string.format("cannot rewrite %s in %s: the file is read-only (make it writable, e.g. "
      .. "chmod u+w %s, and run again)", key, path, path))
  end
  return real, st
end

-- Rewrites `key` in the file at `path`; returns { changed, appended, count,
-- old }. Raises kind "io" (a missing or read-only file) or "usage".
function envfile.set(path, key, value)
  local real, st = envfile.check(path, key)
  local text = fs.read_file(real)
  local new, r = envfile.replace(text, key, value)
  r.changed = new ~= text
  if r.changed then
    local ok, err = pcall(fs.write_file, real, new, { mode = st.mode & 4095 })
    if not ok then
      pgvault.raise("io", string.format("cannot rewrite %s in %s: %s", key, path,
        pgvault.is_error(err) and err.message or tostring(err)))
    end
  end
  return r
end

return envfile
