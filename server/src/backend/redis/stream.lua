-- A room's stream and where its epoch began, shared by bus.lua and room.lua (each script
-- is this file followed by its own). Every key of a room carries the room in a hash tag,
-- so one room lives in one Redis Cluster slot; a script touches one room's keys only,
-- and gets them all in KEYS: KEYS[1] the stream, KEYS[2] its epoch. ARGV[1] is the
-- operation and ARGV[2] the room's name.
--
-- An epoch is the life of one stream: a stream that Redis lost (a restart without
-- persistence, FLUSHALL, a failover to an empty replica) is created again by the next
-- append, which starts a new epoch. Positions of an older epoch mean nothing in the new
-- one.
local STREAM, EPOCH = KEYS[1], KEYS[2]
local ROOM = ARGV[2]
-- Nodes reading this room learn of new entries here (a channel is not a key: it works
-- the same in a cluster), then read them from the stream itself.
local WAKE = 'chatroom:wake'

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
  redis.call('PUBLISH', WAKE, ROOM)
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
