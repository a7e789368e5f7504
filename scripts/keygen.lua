-- generate an age key pair or a backup signing key pair (minisign), or print public keys (-y)
local cli = require "lib.cli"
local crypto = require "pgvault.crypto"
local pgvault = require "pgvault"

local o = cli.parse(arg, {
  usage = "pgvault keygen [--pq] [-o FILE] | pgvault keygen --sign -o FILE [--password-file PW] | "
    .. "pgvault keygen -y [--sign] [-o FILE] [INPUT]",
  summary = "Generates a new age identity (X25519) in age-keygen's layout: '# created', '# public\n"
    .. "key' and the AGE-SECRET-KEY-1... line. It goes to standard output, or to FILE with -o\n"
    .. "(created with mode 0600; an existing file is never overwritten). The public key\n"
    .. "(recipient) is printed on standard error.\n"
    .. "With --sign, generates a key pair for signing backups (Ed25519, minisign's formats):\n"
    .. "the secret key goes to FILE (mode 0600, never overwritten; encrypted with the password\n"
    .. "on the first line of PW when given), the public key to FILE.pub, and the one-line\n"
    .. "public key (RW...) to standard error. 'backup --sign FILE' signs with it; 'restore\n"
    .. "--trust FILE.pub' accepts only what it signed; 'minisign -V -p FILE.pub' checks it too.\n"
    .. "With -y, reads an identity file (standard input when no INPUT) and prints the\n"
    .. "recipient of each identity, one a line; with --sign -y, the public key file of the\n"
    .. "signing key INPUT.",
  options = {
    { "output", "o", "FILE", "write to FILE instead of standard output" },
    { "convert", "y", false, "print the recipients (or with --sign the public key) of the keys in INPUT" },
    { "pq", nil, false, "generate a post-quantum hybrid identity (ML-KEM-768 + X25519, age1pq1...)" },
    { "sign", nil, false, "a backup signing key pair (minisign format) instead of an age identity" },
    { "password-file", nil, "PW", "with --sign: the signing key's password is the first line of PW" },
  },
  positionals = { { "INPUT", "key file for -y (default: standard input)", optional = true } },
})

local function write(text)
  if o.output then
    require("pgvault.fs").write_file(o.output, text)
  else
    io.stdout:write(text)
  end
end

if o.password_file and not o.sign then pgvault.raise("usage", "--password-file only goes with --sign") end
if o.sign and o.pq then pgvault.raise("usage", "--pq is for age identities, not with --sign") end

if o.convert and o.sign then
  if not o.INPUT then pgvault.raise("usage", "keygen --sign -y needs the signing key file as INPUT") end
  local key <close> = require("lib.trust").signing_key(o.INPUT, { password_file = o.password_file,
    password_option = "--password-file" })
  write(key:public_key_file())
  return
end

if o.convert then
  local lines = {}
  for _, id in ipairs(crypto.read_identities(o.INPUT or "-")) do
    lines[#lines + 1] = id:recipient()
    id:close()
  end
  write(table.concat(lines, "\n") .. "\n")
  return
end
if o.INPUT then pgvault.raise("usage", "an INPUT file only goes with -y (see 'pgvault keygen --help')") end

if o.sign then
  if not o.output then
    pgvault.raise("usage", "keygen --sign needs -o FILE: the secret key goes to FILE, the public key to FILE.pub")
  end
  local pair = require("lib.trust").keygen(o.output, { password_file = o.password_file })
  io.stderr:write("Public key: " .. pair.public_key .. "\n")
  return
end

local kg = crypto.keygen { pq = o.pq }
kg.identity:save(o.output or "-")
kg.identity:close()
io.stderr:write("Public key: " .. kg.recipient .. "\n")
