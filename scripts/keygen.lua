-- generate an age X25519 key pair, or print the recipients of an identity file (-y)
local cli = require "lib.cli"
local crypto = require "pgvault.crypto"
local pgvault = require "pgvault"

local o = cli.parse(arg, {
  usage = "pgvault keygen [-o FILE] | pgvault keygen -y [-o FILE] [INPUT]",
  summary = "Generates a new age identity (X25519) in age-keygen's layout: '# created', '# public\n"
    .. "key' and the AGE-SECRET-KEY-1... line. It goes to standard output, or to FILE with -o\n"
    .. "(created with mode 0600; an existing file is never overwritten). The public key\n"
    .. "(recipient) is printed on standard error.\n"
    .. "With -y, reads an identity file (standard input when no INPUT) and prints the\n"
    .. "recipient of each identity, one a line.",
  options = {
    { "output", "o", "FILE", "write to FILE instead of standard output" },
    { "convert", "y", false, "print the recipients of the identities in INPUT" },
    { "pq", nil, false, "generate a post-quantum hybrid identity (ML-KEM-768 + X25519, age1pq1...)" },
  },
  positionals = { { "INPUT", "identity file for -y (default: standard input)", optional = true } },
})

if o.convert then
  local lines = {}
  for _, id in ipairs(crypto.read_identities(o.INPUT or "-")) do
    lines[#lines + 1] = id:recipient()
    id:close()
  end
  local text = table.concat(lines, "\n") .. "\n"
  if o.output then
    require("pgvault.fs").write_file(o.output, text)
  else
    io.stdout:write(text)
  end
  return
end
if o.INPUT then pgvault.raise("usage", "an INPUT file only goes with -y (see 'pgvault keygen --help')") end

local kg = crypto.keygen { pq = o.pq }
kg.identity:save(o.output or "-")
kg.identity:close()
io.stderr:write("Public key: " .. kg.recipient .. "\n")
