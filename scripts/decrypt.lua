-- decrypt an age file (identity files or a passphrase), as 'age -d' does
local cli = require "lib.cli"
local crypto = require "pgvault.crypto"
local stream = require "pgvault.stream"
local pgvault = require "pgvault"

local o = cli.parse(arg, {
  usage = "pgvault decrypt [-i FILE]... [--passphrase-file FILE] [-o OUTPUT] [INPUT]",
  summary = "Decrypts the age file INPUT (standard input when none; binary or ASCII-armored).\n"
    .. "Every 64 KiB chunk is authenticated before its bytes go out; a truncated or tampered\n"
    .. "file fails with an error, and OUTPUT is then not created (a regular OUTPUT is written\n"
    .. "under a temporary name and renamed at the end; /dev/null or a FIFO is written through).",
  options = {
    { "identity", "i", "FILE", "identity file (AGE-SECRET-KEY-1... lines, as age-keygen writes)", multi = true },
    { "passphrase-file", nil, "FILE", "the passphrase is the first line of FILE" },
    { "max-work-factor", nil, "N", "highest scrypt work factor accepted (default 22)" },
    { "output", "o", "OUTPUT", "write to OUTPUT instead of standard output" },
  },
  positionals = { { "INPUT", "file to decrypt (default: standard input)", optional = true } },
})

local identities = {}
for _, f in ipairs(o.identity) do
  for _, id in ipairs(crypto.read_identities(f)) do identities[#identities + 1] = id end
end
local passphrase = o.passphrase_file and crypto.read_passphrase(o.passphrase_file)
if #identities == 0 and not passphrase then
  pgvault.raise("usage", "no key to decrypt with: give -i FILE or --passphrase-file FILE")
end
local max_wf = o.max_work_factor and math.tointeger(tonumber(o.max_work_factor))
if o.max_work_factor and not max_wf then pgvault.raise("usage", "--max-work-factor takes an integer") end

stream.run {
  o.INPUT and stream.file_reader(o.INPUT) or stream.stdin(),
  crypto.decryptor { identities = identities, passphrase = passphrase, max_work_factor = max_wf },
  o.output and stream.file_writer(o.output) or stream.stdout(),
}
for _, id in ipairs(identities) do id:close() end
if passphrase then passphrase:close() end
