-- A room's bus (stream.lua, prepended, defines STREAM, now_ms, append and epoch).
-- ARGV: operation, room, then the operation's own.
local op = ARGV[1]

if op == 'publish' then
  -- ARGV: maxlen, deadline (ms, Redis's clock), the event's JSON. A line that reaches
  -- Redis after its deadline is dropped: its sender was already told it failed (the
  -- node stopped waiting), so nobody may see it.
  local maxlen, deadline, json = ARGV[3], tonumber(ARGV[4]), ARGV[5]
  if now_ms() > deadline then return false end
  return append(maxlen, {'e', json})
elseif op == 'span' then
  -- Where the epoch began and the newest id: {epoch, tail}, '0-0' for an empty room.
  local newest = redis.call('XREVRANGE', STREAM, '+', '-', 'COUNT', 1)
  local start = epoch()
  if #newest == 0 or not start then return {'0-0', '0-0'} end
  return {start, newest[1][1]}
end
return redis.error_reply('unknown bus operation ' .. tostring(op))
