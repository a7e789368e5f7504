-- covers: scripts/lib/cli.lua
-- lib.cli: options, flags, repeatable options, positionals, clustered
-- short flags, --, usage errors (kind usage, naming the option), help text,
-- with_options; sizes and durations for output.
local t = require "harness.testing"
local cli = require "lib.cli"

local SPEC = {
  usage = "pgvault demo SRC [options]",
  options = {
    { "db", "d", "URL", "the database" },
    { "identity", "i", "FILE", "an identity", multi = true },
    { "yes", "y", false, "confirm" },
    { "quiet-ish", "q", false, "less" },
    { "level", nil, "N", "a level", default = "3" },
  },
  positionals = { { "SRC", "the source" }, { "REST", "more", rest = true, optional = true } },
}

local function parse(...) return cli.parse({ ... }, SPEC) end

t.test("long and short options, values in both forms, repeatable options, defaults", function()
  local o = parse("--db", "u1", "-i", "a", "-ib", "--identity=c", "src", "x", "y")
  t.eq(o.db, "u1")
  t.eq(o.identity, { "a", "b", "c" })
  t.eq(o.level, "3")
  t.eq(o.yes, false)
  t.eq(o.SRC, "src")
  t.eq(o.REST, { "x", "y" })
  o = parse("-yq", "--db=u2", "--", "-not-an-option")
  t.eq({ o.yes, o.quiet_ish, o.db, o.SRC }, { true, true, "u2", "-not-an-option" })
  t.eq(parse("-").SRC, "-", "a lone dash is a positional")
end)

t.test("misuse is kind usage and names the option", function()
  local cases = {
    { { "--bogus", "s" }, "unknown option %-%-bogus %(see 'pgvault demo %-%-help'%)" },
    { { "-x", "s" }, "unknown option %-x" },
    { { "-yx", "s" }, "unknown option %-x" },
    { { "s", "--db" }, "option %-%-db needs a value %(URL%)" },
    { { "s", "-d" }, "option %-d needs a value %(URL%)" },
    { { "--yes=1", "s" }, "option %-%-yes takes no value" },
    { {}, "missing SRC" },
  }
  for _, c in ipairs(cases) do
    local e = t.raises(function() cli.parse(c[1], SPEC) end, c[2], table.concat(c[1], " "))
    t.eq(e.kind, "usage")
  end
  local e = t.raises(function() cli.parse({ "a", "b" }, { usage = "pgvault x", positionals = { { "A" } } }) end,
    "unexpected argument 'b'")
  t.eq(e.kind, "usage")
end)

t.test("help lists every option and positional; with_options adds without changing the original", function()
  local text = cli.help(SPEC)
  t.match(text, "^usage: pgvault demo SRC %[options%]\n")
  t.match(text, "\n  %-d, %-%-db URL%s+the database\n")
  t.match(text, "\n  %-i, %-%-identity FILE%s+an identity %(repeatable%)\n")
  t.match(text, "\n      %-%-level N%s+a level\n")
  t.match(text, "\n  SRC%s+the source\n")
  t.match(text, "\n  %-h, %-%-help%s+show this help\n")
  local more = cli.with_options(SPEC, { { "checksum-file", nil, false, "also write NAME.sha256" } })
  t.eq(#more.options, #SPEC.options + 1)
  t.eq(#SPEC.options, 5, "the original is unchanged")
  t.eq(cli.parse({ "--checksum-file", "s" }, more).checksum_file, true)
  t.match(cli.help(more), "%-%-checksum%-file%s+also write NAME%.sha256")
end)

t.test("sizes and durations", function()
  t.eq(cli.bytes(0), "0 B")
  t.eq(cli.bytes(1023), "1023 B")
  t.eq(cli.bytes(34387), "33.6 KiB")
  t.eq(cli.bytes(5 * 1024 * 1024 * 1024), "5.0 GiB")
  t.eq(cli.duration(2.25), "2.2s")
  t.eq(cli.duration(125), "2m05s")
end)
