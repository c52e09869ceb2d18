-- The service's users, their connections and their unique names, and the nodes' beats:
-- global keys, one hash tag, one Redis Cluster slot. Nothing here is announced: each
-- room announces its own changes (room.lua), in the same step as it makes them.
--
-- KEYS (keys.rs, global_keys):
--   1 users     hash user -> name           2 folds   hash user -> its name's keys
--   3 names     hash name key -> user       4 versions hash user -> its name's version
--   5 conns     hash sid -> "node|user"     6 counts  hash user -> connections
--   7 rooms     hash user -> "room|sid" lines (the rooms its connections are in)
--   8 grace     zset user -> when it loses its name (ms), while it has no connection
--   9 nodes     zset node -> last beat (ms) 10 steady hash node -> beats without a gap since (ms)
--  11 nodeinfo  hash node..'#n' -> its connections, node..'#r' -> its rooms, one a line
--  12 roomgrace zset room -> the earliest deadline of a grace period in it (ms)
--  13 roomlist  zset room -> when a node last reported members in it (ms)
--  14 roomcounts hash room -> how many users were online in it then
-- ARGV: operation, this node's name, then the operation's own.
local USERS, FOLDS, NAMES, VERSIONS, CONNS, COUNTS, ROOMS, GRACE, NODES, STEADY, NODEINFO, ROOMGRACE =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local ROOMLIST, ROOMCOUNTS = KEYS[13], KEYS[14]
local op, node = ARGV[1], ARGV[2]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function lines(joined)
  local out = {}
  if joined then
    for line in string.gmatch(joined, '[^\n]+') do table.insert(out, line) end
  end
  return out
end

local function has_line(joined, line)
  for _, l in ipairs(lines(joined)) do if l == line then return true end end
  return false
end

-- The connection `sid` of `user` is on this node.
local function attach(user, sid)
  local at = node .. '|' .. user
  local was = redis.call('HGET', CONNS, sid)
  if was ~= at then
    if was then
      local bar = string.find(was, '|', 1, true)
      redis.call('HINCRBY', COUNTS, was:sub(bar + 1), -1)
      redis.call('HINCRBY', NODEINFO, was:sub(1, bar - 1) .. '#n', -1)
    end
    redis.call('HSET', CONNS, sid, at)
    redis.call('HINCRBY', COUNTS, user, 1)
    redis.call('HINCRBY', NODEINFO, node .. '#n', 1)
  end
  redis.call('ZREM', GRACE, user)
end

-- A name's keys (names.rs), one a line: two names are the same when they share one.
local function other_owner(joined, user)
  for _, key in ipairs(lines(joined)) do
    local owner = redis.call('HGET', NAMES, key)
    if owner and owner ~= user then return owner end
  end
  return false
end

local function release_name(user)
  for _, key in ipairs(lines(redis.call('HGET', FOLDS, user))) do
    if redis.call('HGET', NAMES, key) == user then redis.call('HDEL', NAMES, key) end
  end
  redis.call('HDEL', FOLDS, user)
end

-- Gives `user` the name; returns its new version (newer than any it had, so that rooms
-- told of two names out of order keep the newer).
local function take_name(user, name, joined)
  for _, key in ipairs(lines(joined)) do redis.call('HSET', NAMES, key, user) end
  redis.call('HSET', USERS, user, name)
  redis.call('HSET', FOLDS, user, joined)
  local t = redis.call('TIME')
  local version = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local old = tonumber(redis.call('HGET', VERSIONS, user) or '0')
  if version <= old then version = old + 1 end
  redis.call('HSET', VERSIONS, user, string.format('%.0f', version))
  return string.format('%.0f', version)
end

-- A user with no connection left is forgotten: its name is free.
local function forget(user)
  release_name(user)
  redis.call('HDEL', USERS, user)
  redis.call('HDEL', VERSIONS, user)
  redis.call('HDEL', COUNTS, user)
  redis.call('HDEL', ROOMS, user)
  redis.call('ZREM', GRACE, user)
end

-- Drops the "room|sid" lines of `sid` from the user's rooms (all rooms when `room` is false).
local function drop_rooms(user, sid, room)
  local kept = {}
  for _, line in ipairs(lines(redis.call('HGET', ROOMS, user))) do
    local bar = string.find(line, '|', 1, true)
    local r, s = line:sub(1, bar - 1), line:sub(bar + 1)
    if not (s == sid and (not room or r == room)) then table.insert(kept, line) end
  end
  if #kept == 0 then redis.call('HDEL', ROOMS, user) else redis.call('HSET', ROOMS, user, table.concat(kept, '\n')) end
end

-- One connection is gone; the user's last starts its grace period (or ends it at once).
local function drop(sid, grace_ms, now)
  local at = redis.call('HGET', CONNS, sid)
  if not at then return end
  local bar = string.find(at, '|', 1, true)
  local owner_node, user = at:sub(1, bar - 1), at:sub(bar + 1)
  redis.call('HDEL', CONNS, sid)
  redis.call('HINCRBY', NODEINFO, owner_node .. '#n', -1)
  drop_rooms(user, sid, false)
  if redis.call('HINCRBY', COUNTS, user, -1) > 0 then return end
  redis.call('HDEL', COUNTS, user)
  if grace_ms <= 0 or redis.call('HEXISTS', USERS, user) == 0 then
    forget(user)
  else
    redis.call('ZADD', GRACE, now + grace_ms, user)
  end
end

-- Appends `line` to the lines held in `field` of `hash`, unless it is there already.
local function add_line(hash, field, line)
  local held = redis.call('HGET', hash, field)
  if not has_line(held, line) then
    redis.call('HSET', hash, field, held and (held .. '\n' .. line) or line)
  end
end

-- The connection `sid` of `user`, on this node, is in `room`.
local function add_room(user, sid, room)
  add_line(ROOMS, user, room .. '|' .. sid)
  add_line(NODEINFO, node .. '#r', room)
end

-- The connections `owner` (a node) holds, read in pages before any is changed.
local function conns_of(owner)
  local prefix = owner .. '|'
  local sids, cursor = {}, '0'
  repeat
    local page = redis.call('HSCAN', CONNS, cursor, 'COUNT', 1000)
    cursor = page[1]
    for i = 1, #page[2], 2 do
      if page[2][i + 1]:sub(1, #prefix) == prefix then table.insert(sids, page[2][i]) end
    end
  until cursor == '0'
  return sids
end

local function name_and_version(user)
  return {redis.call('HGET', USERS, user) or '', redis.call('HGET', VERSIONS, user) or '0'}
end

if op == 'connect' then
  local user, sid = ARGV[3], ARGV[4]
  attach(user, sid)
  return redis.call('HGET', USERS, user)
elseif op == 'claim' then
  -- Returns the outcome, the name's version, then the rooms the user is in.
  local user, sid, name, joined = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  attach(user, sid)
  if other_owner(joined, user) then return {'taken'} end
  local old = redis.call('HGET', USERS, user)
  local outcome = 'joined'
  if old == name then return {'unchanged'} end
  if old then outcome = 'renamed' end
  release_name(user)
  local result = {outcome, take_name(user, name, joined)}
  local seen = {}
  for _, line in ipairs(lines(redis.call('HGET', ROOMS, user))) do
    local room = line:sub(1, string.find(line, '|', 1, true) - 1)
    if not seen[room] then seen[room] = true; table.insert(result, room) end
  end
  return result
elseif op == 'enter' then
  -- The connection is in a room: returns the user's name ('' for none) and its version,
  -- or 'limit' when the room is not listed and as many rooms as `max_rooms` are.
  local user, sid, room, max_rooms = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
  if not redis.call('ZSCORE', ROOMLIST, room) then
    if redis.call('ZCARD', ROOMLIST) >= max_rooms then return {'limit'} end
    redis.call('ZADD', ROOMLIST, now_ms(), room)
  end
  attach(user, sid)
  add_room(user, sid, room)
  return name_and_version(user)
elseif op == 'exit' then
  local user, sid, room = ARGV[3], ARGV[4], ARGV[5]
  drop_rooms(user, sid, room)
  return 1
elseif op == 'disconnect' then
  local sid, grace_ms = ARGV[3], tonumber(ARGV[4])
  drop(sid, grace_ms, now_ms())
  return 1
elseif op == 'report' then
  -- Rooms with members on this node (ARGV[3..] in pairs: room, users online there).
  local now = now_ms()
  for i = 3, #ARGV, 2 do
    redis.call('ZADD', ROOMLIST, now, ARGV[i])
    redis.call('HSET', ROOMCOUNTS, ARGV[i], ARGV[i + 1])
  end
  return 1
elseif op == 'rooms' then
  -- The listed rooms, each with its count of users online (0 when no node reported it
  -- for `stale_ms`: its last members left, or their node died).
  local stale_ms = tonumber(ARGV[3])
  local now = now_ms()
  local result = {}
  local listed = redis.call('ZRANGE', ROOMLIST, 0, -1, 'WITHSCORES')
  for i = 1, #listed, 2 do
    local count = '0'
    if now - tonumber(listed[i + 1]) <= stale_ms then count = redis.call('HGET', ROOMCOUNTS, listed[i]) or '0' end
    table.insert(result, listed[i])
    table.insert(result, count)
  end
  return result
elseif op == 'room_grace' then
  -- A grace period ending at `deadline` began in `room`: the room is swept then. An
  -- earlier deadline, or one already due (the sweep of it may be under way), is not
  -- overwritten; a due one is, so that such a sweep sees the change ('room_graced').
  local room, deadline = ARGV[3], tonumber(ARGV[4])
  local current = redis.call('ZSCORE', ROOMGRACE, room)
  if not current or tonumber(current) > deadline or tonumber(current) <= now_ms() then
    redis.call('ZADD', ROOMGRACE, deadline, room)
  end
  return 1
elseif op == 'room_graced' then
  -- A sweep of `room` (due at `seen`) left its next deadline `next` (0: none). Unless
  -- another grace period began meanwhile (the score changed), that is the room's entry.
  local room, seen, next = ARGV[3], ARGV[4], tonumber(ARGV[5])
  local current = redis.call('ZSCORE', ROOMGRACE, room)
  if current and tonumber(current) == tonumber(seen) then
    if next > 0 then redis.call('ZADD', ROOMGRACE, next, room) else redis.call('ZREM', ROOMGRACE, room) end
  end
  return 1
elseif op == 'sweep' then
  -- Beat for this node; forget users whose grace period is over. Returns this node's
  -- connection count as Redis has it (the node writes its own back when it differs),
  -- how many nodes are silent for longer than the timeout, each with its rooms (their
  -- connections must leave those rooms before the node is forgotten: 'forget_node'),
  -- then the rooms with a grace period due, each with its score ('room_graced').
  --
  -- A node takes others for dead only when its own beats came without a gap of over 2 s
  -- for a whole timeout: after Redis stalled (paused, a slow failover, a long fork)
  -- every node's last beat is old, and the first node to beat again must not take all
  -- the others for dead. Beats are stamped with Redis's clock.
  local timeout_ms, idle_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
  local now = now_ms()
  -- Rooms nobody reported members in for the idle time leave the list (their own keys
  -- expire then too: room.lua 'touch').
  for _, room in ipairs(redis.call('ZRANGEBYSCORE', ROOMLIST, '-inf', now - idle_ms, 'LIMIT', 0, 1000)) do
    redis.call('ZREM', ROOMLIST, room)
    redis.call('HDEL', ROOMCOUNTS, room)
  end
  local last = redis.call('ZSCORE', NODES, node)
  if not last or now - tonumber(last) > 2000 then
    redis.call('HSET', STEADY, node, now)
  end
  redis.call('ZADD', NODES, now, node)
  for _, user in ipairs(redis.call('ZRANGEBYSCORE', GRACE, '-inf', now, 'LIMIT', 0, 1000)) do
    if tonumber(redis.call('HGET', COUNTS, user) or '0') <= 0 then forget(user) else redis.call('ZREM', GRACE, user) end
  end
  local result = {tostring(tonumber(redis.call('HGET', NODEINFO, node .. '#n') or '0')), '0'}
  if now - tonumber(redis.call('HGET', STEADY, node)) >= timeout_ms then
    local dead_nodes = redis.call('ZRANGEBYSCORE', NODES, '-inf', now - timeout_ms)
    result[2] = tostring(#dead_nodes)
    for _, dead in ipairs(dead_nodes) do
      table.insert(result, dead)
      table.insert(result, redis.call('HGET', NODEINFO, dead .. '#r') or '')
    end
  end
  local due = redis.call('ZRANGEBYSCORE', ROOMGRACE, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1000)
  for _, item in ipairs(due) do table.insert(result, item) end
  return result
elseif op == 'forget_node' then
  -- After its rooms were told: the dead node's connections go, its users with no
  -- connection elsewhere lose their names at once.
  local dead = ARGV[3]
  local now = now_ms()
  for _, sid in ipairs(conns_of(dead)) do drop(sid, 0, now) end
  redis.call('ZREM', NODES, dead)
  redis.call('HDEL', STEADY, dead)
  redis.call('HDEL', NODEINFO, dead .. '#n', dead .. '#r')
  return 1
elseif op == 'sync' then
  -- Makes this node's connections exactly its live ones (ARGV[4..] in fives: sid,
  -- user, name, the name's keys, the connection's rooms one a line), after Redis lost
  -- data or the node was taken for dead. A name comes back only if nobody took it
  -- meanwhile. Returns, for each live connection, its name and version ('' and '0'
  -- for none), then the sids whose name another user took meanwhile.
  local grace_ms = tonumber(ARGV[3])
  local now = now_ms()
  local live = {}
  for i = 4, #ARGV, 5 do live[ARGV[i]] = true end
  for _, sid in ipairs(conns_of(node)) do
    if not live[sid] then drop(sid, grace_ms, now) end
  end
  local names, lost = {}, {}
  for i = 4, #ARGV, 5 do
    local sid, user, name, joined, rooms = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    attach(user, sid)
    for _, room in ipairs(lines(rooms)) do add_room(user, sid, room) end
    if name ~= '' and redis.call('HEXISTS', USERS, user) == 0 then
      if other_owner(joined, user) then
        table.insert(lost, sid)
      else
        take_name(user, name, joined)
      end
    end
    local current = name_and_version(user)
    table.insert(names, current[1])
    table.insert(names, current[2])
  end
  for _, sid in ipairs(lost) do table.insert(names, sid) end
  return names
end
return redis.error_reply('unknown presence operation ' .. tostring(op))
