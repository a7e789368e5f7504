-- covers: tests/faults/
-- The fault matrix's rows in tests/faults/signal_rows.lua (the format and the
-- checks: tests/faults/matrix.lua): every row with PGVAULT_FAULTS=full
-- (make faults), the rows marked short otherwise (make test).
require("faults.matrix").load("signal")
