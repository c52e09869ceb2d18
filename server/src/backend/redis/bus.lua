-- A room's bus (stream.lua, prepended, defines STREAM, now_ms, append and epoch).
-- ARGV: operation, room, then the operation's own.
local op = ARGV[1]

if op == 'publish' then
  -- ARGV: maxlen, deadline (ms, Redis's clock), the event's JSON. A line that reaches
  -- Redis after its deadline is dropped: its sender was already told it failed (the
  -- node stopped waiting), so nobody may see it.
  -- ARGV[6], when given, is the user who wrote it (kept to find its lines again).
  local maxlen, deadline, json, user = ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
  if now_ms() > deadline then return false end
  if user then return append(maxlen, {'e', json, 'u', user}) end
  return append(maxlen, {'e', json})
elseif op == 'delete' then
  -- ARGV: the id. Removes one entry and returns {event JSON, user or ''}, or false when
  -- there is none. Readers take max-deleted-entry-id for how far the stream was trimmed;
  -- XDEL raises it, so it is put back: a deletion is not a trim.
  local id = ARGV[3]
  local found = redis.call('XRANGE', STREAM, id, id)
  if #found == 0 then return false end
  local info = redis.call('XINFO', 'STREAM', STREAM)
  local last, added, max_deleted
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1]
    elseif info[i] == 'entries-added' then added = info[i + 1]
    elseif info[i] == 'max-deleted-entry-id' then max_deleted = info[i + 1] end
  end
  redis.call('XDEL', STREAM, id)
  redis.call('XSETID', STREAM, last, 'ENTRIESADDED', added, 'MAXDELETEDID', max_deleted)
  local fields, json, user = found[1][2], '', ''
  for i = 1, #fields, 2 do
    if fields[i] == 'e' then json = fields[i + 1] elseif fields[i] == 'u' then user = fields[i + 1] end
  end
  return {json, user}
elseif op == 'span' then
  -- Where the epoch began and the newest id: {epoch, tail}, '0-0' for an empty room.
  local newest = redis.call('XREVRANGE', STREAM, '+', '-', 'COUNT', 1)
  local start = epoch()
  if #newest == 0 or not start then return {'0-0', '0-0'} end
  return {start, newest[1][1]}
end
return redis.error_reply('unknown bus operation ' .. tostring(op))
