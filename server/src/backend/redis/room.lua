-- Who is in one room, kept next to the room's stream (stream.lua, prepended, defines
-- STREAM, ROOM, now_ms and append): each change to the room's list is appended to its
-- stream in the same atomic step, so the list and the stream always agree and exactly
-- one node announces it.
--
-- KEYS (keys.rs, RoomKeys): 1 stream, 2 epoch, 3 conns (hash sid -> "node|user"),
-- 4 counts (hash user -> connections in the room), 5 members (hash user -> the name the
-- room knows it by), 6 versions (hash user -> that name's version), 7 grace (zset user
-- -> when it leaves unless it comes back, ms).
-- ARGV: operation, room, this node's name, the stream's MAXLEN, then the operation's own.
local CONNS, COUNTS, MEMBERS, VERSIONS, GRACE = KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local op, node, maxlen = ARGV[1], ARGV[3], ARGV[4]

-- The `u` field names the user a join or rename is about, for its other connections.
local function publish(event, user)
  local json = cjson.encode(event)
  if user then
    return append(maxlen, {'e', json, 'u', user})
  end
  return append(maxlen, {'e', json})
end

-- The room knows `user` by `name` from now on, unless it knows a newer name already.
local function announce_name(user, name, version)
  local old = redis.call('HGET', MEMBERS, user)
  local known = tonumber(redis.call('HGET', VERSIONS, user) or '0')
  if tonumber(version) < known then return end
  redis.call('HSET', VERSIONS, user, version)
  if old == name then return end
  redis.call('HSET', MEMBERS, user, name)
  if old then
    publish({kind = 'renamed', author = name, from = old}, user)
  else
    publish({kind = 'joined', author = name}, user)
  end
end

local function attach(sid, user)
  local at = node .. '|' .. user
  local was = redis.call('HGET', CONNS, sid)
  if was ~= at then
    redis.call('HSET', CONNS, sid, at)
    redis.call('HINCRBY', COUNTS, user, 1)
  end
  redis.call('ZREM', GRACE, user)
end

-- The user leaves the room; its leave is announced if the room knew its name.
local function leave(user)
  redis.call('ZREM', GRACE, user)
  redis.call('HDEL', COUNTS, user)
  redis.call('HDEL', VERSIONS, user)
  local name = redis.call('HGET', MEMBERS, user)
  if not name then return 0 end
  redis.call('HDEL', MEMBERS, user)
  publish({kind = 'left', author = name})
  return 1
end

-- One connection left the room; the user's last there starts its grace period (or
-- ends it at once). Returns {left, grace deadline or 0}.
local function drop(sid, grace_ms, now)
  local at = redis.call('HGET', CONNS, sid)
  if not at then return {0, 0} end
  local user = at:sub(string.find(at, '|', 1, true) + 1)
  redis.call('HDEL', CONNS, sid)
  if redis.call('HINCRBY', COUNTS, user, -1) > 0 then return {0, 0} end
  if grace_ms <= 0 or redis.call('HEXISTS', MEMBERS, user) == 0 then
    return {leave(user), 0}
  end
  redis.call('HDEL', COUNTS, user)
  redis.call('ZADD', GRACE, now + grace_ms, user)
  return {0, now + grace_ms}
end

local function next_deadline()
  local first = redis.call('ZRANGE', GRACE, 0, 0, 'WITHSCORES')
  if #first == 0 then return 0 end
  return tonumber(first[2])
end

if op == 'enter' then
  local sid, user, name, version = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
  attach(sid, user)
  if name ~= '' then announce_name(user, name, version) end
  return 1
elseif op == 'name' then
  -- A claim elsewhere gave the user this name: the room hears of it if the user is here.
  local user, name, version = ARGV[5], ARGV[6], ARGV[7]
  if redis.call('HEXISTS', COUNTS, user) == 1 or redis.call('ZSCORE', GRACE, user) then
    announce_name(user, name, version)
  end
  return 1
elseif op == 'exit' then
  local sid, grace_ms = ARGV[5], tonumber(ARGV[6])
  return drop(sid, grace_ms, now_ms())
elseif op == 'expire' then
  -- Users whose grace period is over leave. Returns {left, the next deadline or 0}.
  local now = now_ms()
  local left = 0
  for _, user in ipairs(redis.call('ZRANGEBYSCORE', GRACE, '-inf', now, 'LIMIT', 0, 1000)) do
    if redis.call('HEXISTS', COUNTS, user) == 0 then
      left = left + leave(user)
    else
      redis.call('ZREM', GRACE, user)
    end
  end
  return {left, next_deadline()}
elseif op == 'reap' then
  -- The connections of a node taken for dead leave the room at once. Returns how many
  -- users left.
  local prefix = ARGV[5] .. '|'
  local now = now_ms()
  local left = 0
  local all = redis.call('HGETALL', CONNS)
  for i = 1, #all, 2 do
    if all[i + 1]:sub(1, #prefix) == prefix then left = left + drop(all[i], 0, now)[1] end
  end
  return left
elseif op == 'touch' then
  -- A node with members here: the room's keys live `idle_ms` more. Returns how many
  -- users are in the room.
  local idle_ms = ARGV[5]
  for i = 1, 7 do redis.call('PEXPIRE', KEYS[i], idle_ms) end
  return redis.call('HLEN', MEMBERS)
elseif op == 'snapshot' then
  local newest = redis.call('XREVRANGE', STREAM, '+', '-', 'COUNT', 1)
  local result = redis.call('HVALS', MEMBERS)
  table.insert(result, 1, newest[1] and newest[1][1] or '0-0')
  return result
elseif op == 'sync' then
  -- Writes these connections of this node back into the room (ARGV[6..] in fours: sid,
  -- user, name, its version; ARGV[5], the grace, is the caller's). Returns the next grace
  -- deadline or 0, then this node's connections in the room that are not listed: the
  -- caller drops those it no longer has. Not here: the list was taken before this ran,
  -- and a connection that entered the room since is not on it, yet must keep counting.
  local listed = {}
  for i = 6, #ARGV, 4 do listed[ARGV[i]] = true end
  for i = 6, #ARGV, 4 do
    local sid, user, name, version = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    attach(sid, user)
    if name ~= '' then announce_name(user, name, version) end
  end
  local result = {next_deadline()}
  local prefix = node .. '|'
  local all = redis.call('HGETALL', CONNS)
  for i = 1, #all, 2 do
    if all[i + 1]:sub(1, #prefix) == prefix and not listed[all[i]] then table.insert(result, all[i]) end
  end
  return result
end
return redis.error_reply('unknown room operation ' .. tostring(op))
