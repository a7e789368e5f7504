-- What every workflow's stage list shares: lists as written in a workflow
-- script (a step may give several stages as a list, or false when its
-- options leave it out) made into what stream.run takes, and the meter.
local stream = require "pgvault.stream"

local pipeline = {}

-- The stages of `list` in order: nested lists flattened, false and nil
-- (a step left out) dropped.
function pipeline.flatten(list, out)
  out = out or {}
  for i = 1, #list do
    local s = list[i]
    if type(s) == "table" and not stream.is_stage(s) and getmetatable(s) == nil then
      pipeline.flatten(s, out)
    elseif s then
      out[#out + 1] = s
    end
  end
  return out
end

-- The progress meter: drawn only on a terminal, and not at all with -q.
function pipeline.progress()
  local quiet = log.level() ~= "info" and log.level() ~= "debug"
  return stream.progress { label = "progress", tty = not quiet and nil }
end

return pipeline
