-- wrk script of Scripts/bench/api_publish.sh: cycles through pre-built publish requests.
-- Usage: wrk ... -s api_publish.lua URL -- REQUESTS_FILE CONTENT_TYPE
-- REQUESTS_FILE (from api_publish.py requests): per request a line with the path and query,
-- then a line with the body. Every request is formatted once, in init; request() only hands
-- out the next string. The benchmark runs one wrk thread (with more, each would cycle
-- through the same list from the start).
local reqs = {}
local n = 0
local i = 0

function init(args)
   local file, ctype = args[1], args[2] or "application/json"
   local f = assert(io.open(file, "r"), "cannot open " .. tostring(file))
   while true do
      local path = f:read("*l")
      if not path then break end
      local body = assert(f:read("*l"), "a path without a body in " .. file)
      n = n + 1
      reqs[n] = wrk.format("POST", path, { ["Content-Type"] = ctype }, body)
   end
   f:close()
   assert(n > 0, "no requests in " .. file)
end

function request()
   i = i + 1
   if i > n then i = 1 end
   return reqs[i]
end
