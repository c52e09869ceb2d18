-- The room's stream and where its epoch began, shared by bus.lua and presence.lua (each
-- script is this file followed by its own). An epoch is the life of one stream: a stream
-- that Redis lost (a restart without persistence, FLUSHALL, a failover to an empty
-- replica) is created again by the next append, which starts a new epoch. Positions of
-- an older epoch mean nothing in the new one.
local STREAM = 'chatroom:events'
local EPOCH = 'chatroom:epoch'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Appends an entry with `fields` (a flat list), capped at about `maxlen` entries;
-- returns its id. An append that creates the stream records it as the epoch's start.
local function append(maxlen, fields)
  local fresh = redis.call('EXISTS', STREAM) == 0
  local id = redis.call('XADD', STREAM, 'MAXLEN', '~', maxlen, '*', unpack(fields))
  if fresh then redis.call('SET', EPOCH, id) end
  return id
end

-- Where the current epoch began: recorded by the append that created the stream, or,
-- for a stream written before epochs were recorded, its oldest entry. False when
-- there is no stream.
local function epoch()
  local start = redis.call('GET', EPOCH)
  if start then return start end
  local oldest = redis.call('XRANGE', STREAM, '-', '+', 'COUNT', 1)
  if #oldest == 0 then return false end
  redis.call('SET', EPOCH, oldest[1][1])
  return oldest[1][1]
end
