-- Drives an interactive program in a pseudo-terminal under tmux (for
-- prompts that read /dev/tty, such as age's passphrase prompt).
local h = require "harness.env"
local proc = require "pgvault.proc"

local tty = {}

-- Starts `command` (a shell command line) in a detached tmux session with
-- its own socket in a fresh directory; returns a session object.
function tty.start(command)
  local dir = h.tmpdir()
  local s = { socket = dir .. "/tmux.sock", done = dir .. "/done" }
  function s.tmux(...)
    return h.run({ "tmux", "-S", s.socket, ... }, { timeout = 20 })
  end
  local wrapped = string.format("%s; echo $? > %s; sleep 30", command, s.done)
  local r = s.tmux("new-session", "-d", "-s", "t", "-x", "150", "-y", "40", "sh", "-c", wrapped)
  if r.code ~= 0 then error("cannot start tmux: " .. r.stderr, 2) end
  function s.screen() return s.tmux("capture-pane", "-p", "-t", "t").stdout end
  -- Waits until the screen shows `text` (plain find); returns the screen or nil.
  function s.wait_for(text, seconds)
    local deadline = proc.now() + (seconds or 20)
    repeat
      local scr = s.screen()
      if scr:find(text, 1, true) then return scr end
      proc.sleep(0.1)
    until proc.now() > deadline
    return nil, s.screen()
  end
  function s.type_line(text)
    s.tmux("send-keys", "-t", "t", "-l", text)
    s.tmux("send-keys", "-t", "t", "Enter")
  end
  -- Waits for the command to exit; returns its exit code or nil on timeout.
  function s.wait_exit(seconds)
    local deadline = proc.now() + (seconds or 60)
    repeat
      local f = io.open(s.done)
      if f then
        local code = tonumber(f:read("a"))
        f:close()
        if code then return code end
      end
      proc.sleep(0.1)
    until proc.now() > deadline
    return nil
  end
  function s.close() s.tmux("kill-server") end
  return s
end

return tty
