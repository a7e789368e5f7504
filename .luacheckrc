-- luacheck configuration for pgvault's scripts, tests and benchmarks.
std = "lua54"
globals = {}
read_globals = { "log" }
max_line_length = 120
files["tests/"] = { read_globals = { "log" } }
