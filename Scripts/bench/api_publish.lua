-- wrk script of api_publish.sh: cycles through pre-built requests.
--   wrk ... -s api_publish.lua URL -- REQUESTS_FILE CONTENT_TYPE [AUTHORIZATION]
-- REQUESTS_FILE (api_publish.py requests): per request a line with the path and query, then a
-- line with the body. Every request is formatted once, in init; one wrk thread (with more,
-- each would cycle through the same list).
local reqs, n, i = {}, 0, 0

function init(args)
   local f = assert(io.open(args[1], "r"), "cannot open " .. tostring(args[1]))
   for path in f:lines() do
      local body = assert(f:read("*l"), "a path without a body")
      n = n + 1
      local headers = { ["Content-Type"] = args[2] or "application/json" }
      if args[3] then headers["Authorization"] = args[3] end
      reqs[n] = wrk.format("POST", path, headers, body)
   end
   f:close()
   assert(n > 0, "no requests in " .. args[1])
end

function request()
   i = i % n + 1
   return reqs[i]
end
