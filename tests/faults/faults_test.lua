-- covers: tests/faults/
-- The fault matrix (tests/faults/matrix.lua documents a row): every
-- tests/faults/*_rows.lua, all rows with PGVAULT_FAULTS=full (make
-- faults), the rows marked short otherwise (make test).
local matrix = require "faults.matrix"

matrix.load("tests/faults")
