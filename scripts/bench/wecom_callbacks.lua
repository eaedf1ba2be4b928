-- wrk script for scripts/bench-wecom-wrk.sh: each request is the next line of
-- $CALLBACKS ("path?query<TAB>body", one signed callback with its own MsgId). Each wrk
-- thread takes every n-th line, so no two threads send the same callback; a thread that
-- runs out starts over (duplicates, which kefu answers from its dedupe key).
local threads = 0

function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

function init(args)
  local n = tonumber(os.getenv("WRK_THREADS") or "1")
  paths, bodies = {}, {}
  local i = 0
  for line in io.lines(os.getenv("CALLBACKS")) do
    if i % n == id then
      local tab = line:find("\t", 1, true)
      paths[#paths + 1] = line:sub(1, tab - 1)
      bodies[#bodies + 1] = line:sub(tab + 1)
    end
    i = i + 1
  end
  next_line = 0
  headers = { ["Content-Type"] = "text/xml" }
end

function request()
  next_line = next_line % #paths + 1
  return wrk.format("POST", paths[next_line], headers, bodies[next_line])
end
