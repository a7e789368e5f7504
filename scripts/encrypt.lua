-- encrypt a file with age (to recipients, or with a passphrase), as the age CLI does
local cli = require "lib.cli"
local crypto = require "pgvault.crypto"
local stream = require "pgvault.stream"
local pgvault = require "pgvault"

local o = cli.parse(arg, {
  usage = "pgvault encrypt [-r RECIPIENT]... [-R FILE]... [--passphrase-file FILE] [-a] [-o OUTPUT] [INPUT]",
  summary = "Encrypts INPUT (standard input when none) into the age format, readable by\n"
    .. "'age -d' and 'pgvault decrypt'. Output goes to OUTPUT (written whole or not at all)\n"
    .. "or to standard output.",
  options = {
    { "recipient", "r", "RECIPIENT", "encrypt to an age1... recipient", multi = true },
    { "recipients-file", "R", "FILE", "encrypt to every recipient listed in FILE", multi = true },
    { "passphrase-file", nil, "FILE", "encrypt with the passphrase on the first line of FILE (scrypt)" },
    { "work-factor", nil, "N", "scrypt work factor as log2(N) with --passphrase-file (default 18)" },
    { "armor", "a", false, "write ASCII-armored (PEM) output" },
    { "output", "o", "OUTPUT", "write to OUTPUT instead of standard output" },
  },
  positionals = { { "INPUT", "file to encrypt (default: standard input)", optional = true } },
})

local recipients = {}
for _, r in ipairs(o.recipient) do recipients[#recipients + 1] = crypto.check_recipient(r) end
for _, f in ipairs(o.recipients_file) do
  for _, r in ipairs(crypto.read_recipients(f)) do recipients[#recipients + 1] = r end
end
local passphrase = o.passphrase_file and crypto.read_passphrase(o.passphrase_file)
if #recipients == 0 and not passphrase then
  pgvault.raise("usage", "nothing to encrypt to: give -r RECIPIENT, -R FILE or --passphrase-file FILE")
end
if #recipients > 0 and passphrase then
  pgvault.raise("usage", "--passphrase-file cannot be combined with recipients (age keeps a passphrase alone)")
end
local work_factor = o.work_factor and math.tointeger(tonumber(o.work_factor))
if o.work_factor and not work_factor then pgvault.raise("usage", "--work-factor takes an integer") end

stream.run {
  o.INPUT and stream.file_reader(o.INPUT) or stream.stdin(),
  crypto.encryptor { recipients = recipients, passphrase = passphrase, work_factor = work_factor, armor = o.armor },
  o.output and stream.file_writer(o.output) or stream.stdout(),
}
if passphrase then passphrase:close() end
