-- The cluster's presence: users, their connections and their unique names.
-- Every change to who is online is appended to the room's stream in the same atomic
-- step, so the list and the stream always agree, and exactly one node announces it.
--
-- ARGV: operation, this node's name, the stream's MAXLEN, then the operation's own.
-- Keys (one Redis, not Redis Cluster):
--   P..'users'        hash  user -> name          P..'folds'  hash user -> its name's keys
--   P..'names'        hash  name key -> user      P..'grace'  zset user -> leave deadline (ms)
--   P..'conns:'..user set   of sids               P..'node:'..node  set of "sid|user"
--   P..'nodes'        zset  node -> last beat (ms)
--   P..'steady'       hash  node -> since when its beats came without a gap (ms)
-- (stream.lua, prepended to this script, defines STREAM, now_ms and append.)
local P = 'chatroom:presence:'
local op, node, maxlen = ARGV[1], ARGV[2], ARGV[3]

-- The `u` field names the user a join or rename is about, for its other connections.
local function publish(event, user)
  local json = cjson.encode(event)
  if user then
    return append(maxlen, {'e', json, 'u', user})
  end
  return append(maxlen, {'e', json})
end

local function attach(user, sid)
  redis.call('SADD', P .. 'conns:' .. user, sid)
  redis.call('SADD', P .. 'node:' .. node, sid .. '|' .. user)
  redis.call('ZREM', P .. 'grace', user)
end

-- A name's keys (names.rs), one a line: two names are the same when they share one.
local function keys_of(joined)
  local keys = {}
  for key in string.gmatch(joined, '[^\n]+') do table.insert(keys, key) end
  return keys
end

-- The user other than `user` holding one of these keys, if any.
local function other_owner(keys, user)
  for _, key in ipairs(keys) do
    local owner = redis.call('HGET', P .. 'names', key)
    if owner and owner ~= user then return owner end
  end
  return false
end

-- Frees the keys of the name `user` holds.
local function release_name(user)
  local held = redis.call('HGET', P .. 'folds', user)
  if held then
    for _, key in ipairs(keys_of(held)) do
      if redis.call('HGET', P .. 'names', key) == user then redis.call('HDEL', P .. 'names', key) end
    end
  end
  redis.call('HDEL', P .. 'folds', user)
end

local function take_name(user, name, joined)
  for _, key in ipairs(keys_of(joined)) do redis.call('HSET', P .. 'names', key, user) end
  redis.call('HSET', P .. 'users', user, name)
  redis.call('HSET', P .. 'folds', user, joined)
end

-- A user with no connection left goes: its name is freed and, if it had one, its
-- leave announced. Returns 1 when a leave was announced.
local function leave(user)
  redis.call('ZREM', P .. 'grace', user)
  local name = redis.call('HGET', P .. 'users', user)
  if not name then return 0 end
  release_name(user)
  redis.call('HDEL', P .. 'users', user)
  publish({kind = 'left', author = name})
  return 1
end

-- One connection of `user` is gone; its last one starts the grace period.
local function drop(user, sid, grace_ms, now)
  local conns = P .. 'conns:' .. user
  redis.call('SREM', conns, sid)
  if redis.call('SCARD', conns) > 0 then return 0 end
  if grace_ms <= 0 or redis.call('HEXISTS', P .. 'users', user) == 0 then
    return leave(user)
  end
  redis.call('ZADD', P .. 'grace', now + grace_ms, user)
  return 0
end

-- Drops a "sid|user" member of a node's set.
local function drop_member(member, grace_ms, now)
  local bar = string.find(member, '|', 1, true)
  return drop(member:sub(bar + 1), member:sub(1, bar - 1), grace_ms, now)
end

if op == 'connect' then
  local user, sid = ARGV[4], ARGV[5]
  attach(user, sid)
  return redis.call('HGET', P .. 'users', user)
elseif op == 'claim' then
  local user, sid, name, joined = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
  attach(user, sid)
  if other_owner(keys_of(joined), user) then return 'taken' end
  local old = redis.call('HGET', P .. 'users', user)
  if old == name then return 'unchanged' end
  release_name(user)
  take_name(user, name, joined)
  if old then
    publish({kind = 'renamed', author = name, from = old}, user)
    return 'renamed'
  end
  publish({kind = 'joined', author = name}, user)
  return 'joined'
elseif op == 'disconnect' then
  local user, sid, grace_ms = ARGV[4], ARGV[5], tonumber(ARGV[6])
  redis.call('SREM', P .. 'node:' .. node, sid .. '|' .. user)
  return drop(user, sid, grace_ms, now_ms())
elseif op == 'snapshot' then
  local newest = redis.call('XREVRANGE', STREAM, '+', '-', 'COUNT', 1)
  local result = redis.call('HVALS', P .. 'users')
  table.insert(result, 1, newest[1] and newest[1][1] or '0-0')
  return result
elseif op == 'sweep' then
  -- Beat for this node; users of nodes silent for longer than the timeout, and users
  -- whose grace period is over, leave. Returns this node's connection count as Redis
  -- has it (the node resyncs when it differs) and how many left.
  --
  -- A node reaps others only when its own beats came without a gap of over 2 s for a
  -- whole timeout: after Redis stalled (paused, a slow failover, a long fork) every
  -- node's last beat is old, and the first node to beat again must not take all the
  -- others for dead. Beats are stamped with Redis's clock.
  local timeout_ms = tonumber(ARGV[4])
  local now = now_ms()
  local last = redis.call('ZSCORE', P .. 'nodes', node)
  if not last or now - tonumber(last) > 2000 then
    redis.call('HSET', P .. 'steady', node, now)
  end
  redis.call('ZADD', P .. 'nodes', now, node)
  local steady_since = tonumber(redis.call('HGET', P .. 'steady', node))
  local left = 0
  if now - steady_since >= timeout_ms then
    for _, dead in ipairs(redis.call('ZRANGEBYSCORE', P .. 'nodes', '-inf', now - timeout_ms)) do
      for _, member in ipairs(redis.call('SMEMBERS', P .. 'node:' .. dead)) do
        left = left + drop_member(member, 0, now)
      end
      redis.call('DEL', P .. 'node:' .. dead)
      redis.call('ZREM', P .. 'nodes', dead)
      redis.call('HDEL', P .. 'steady', dead)
    end
  end
  for _, user in ipairs(redis.call('ZRANGEBYSCORE', P .. 'grace', '-inf', now, 'LIMIT', 0, 1000)) do
    if redis.call('SCARD', P .. 'conns:' .. user) == 0 then
      left = left + leave(user)
    else
      redis.call('ZREM', P .. 'grace', user)
    end
  end
  return {redis.call('SCARD', P .. 'node:' .. node), left}
elseif op == 'sync' then
  -- Makes this node's set exactly its live connections (ARGV[5..] in fours: sid, user,
  -- name, the name's keys), after Redis lost data or the node was taken for dead. A name
  -- comes back only if nobody took it meanwhile. Returns how many left, then the sids
  -- of connections whose name another user took meanwhile (they have none now).
  local grace_ms = tonumber(ARGV[4])
  local now = now_ms()
  local live = {}
  for i = 5, #ARGV, 4 do live[ARGV[i] .. '|' .. ARGV[i + 1]] = true end
  local left = 0
  for _, member in ipairs(redis.call('SMEMBERS', P .. 'node:' .. node)) do
    if not live[member] then
      redis.call('SREM', P .. 'node:' .. node, member)
      left = left + drop_member(member, grace_ms, now)
    end
  end
  local lost = {}
  for i = 5, #ARGV, 4 do
    local sid, user, name, joined = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    attach(user, sid)
    if name ~= '' and redis.call('HEXISTS', P .. 'users', user) == 0 then
      if not other_owner(keys_of(joined), user) then
        take_name(user, name, joined)
        publish({kind = 'joined', author = name}, user)
      else
        table.insert(lost, sid)
      end
    end
  end
  table.insert(lost, 1, left)
  return lost
end
return redis.error_reply('unknown presence operation ' .. tostring(op))
