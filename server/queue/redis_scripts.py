"""The Lua scripts of the Redis Streams queue (server/queue/redis.py): each queue operation is one of them, so it
is atomic; the key layout is described in that module."""

# ARGV: prefix, then per job: dedupe key (or ''), its TTL in ms, its expiry time, id, data, enqueue time.
# Each job's SET NX and XADD happen together (the whole batch is one script). Returns 1 (stored) or 0 per job.
ENQUEUE = """
local p = ARGV[1]
local stream, live, dedupes = p .. 'stream', p .. 'live', p .. 'dedupes'
local out = {}
for i = 2, #ARGV, 6 do
  local dedupe, id, enq = ARGV[i], ARGV[i + 3], ARGV[i + 5]
  local stored = 1
  if dedupe ~= '' then
    if redis.call('SET', p .. 'dedupe:' .. dedupe, '1', 'NX', 'PX', ARGV[i + 1]) then
      redis.call('ZADD', dedupes, ARGV[i + 2], dedupe)
    else
      stored = 0
    end
  end
  if stored == 1 then
    local key = p .. 'job:' .. id
    local entry = redis.call('XADD', stream, '*', 'id', id)
    redis.call('HSET', key, 'data', ARGV[i + 4], 'state', 'queued', 'attempts', 0, 'entry', entry, 'enq', enq)
    redis.call('HDEL', key, 'err', 'receipt')
    redis.call('ZADD', live, enq, id)
  end
  out[#out + 1] = stored
end
return out
"""

# ARGV: prefix, group, consumer, count, now, deadline, receipt. Returns flat [data, attempts, err] triples.
CLAIM = """
local p, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local count, now, deadline, receipt = tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7]
local stream = p .. 'stream'
-- the group, again if a Redis that restarted without its data has lost it (BUSYGROUP when it exists)
redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. 'delayed', '-inf', now, 'LIMIT', 0, ARGV[8])) do
  redis.call('ZREM', p .. 'delayed', id)
  local entry = redis.call('XADD', stream, '*', 'id', id)
  redis.call('HSET', p .. 'job:' .. id, 'entry', entry)
end
local out = {}
local function take(id, key)
  local attempts = redis.call('HINCRBY', key, 'attempts', 1)
  redis.call('HSET', key, 'state', 'running', 'receipt', receipt)
  redis.call('ZADD', p .. 'running', deadline, id)
  local data, err = unpack(redis.call('HMGET', key, 'data', 'err'))
  out[#out + 1] = data
  out[#out + 1] = attempts
  out[#out + 1] = err or ''
end
-- claims whose worker stopped heartbeating: the entry moves to this consumer (XCLAIM), a new receipt fences the old
for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. 'running', '-inf', now, 'LIMIT', 0, count)) do
  local key = p .. 'job:' .. id
  local entry = redis.call('HGET', key, 'entry')
  if entry and #redis.call('XCLAIM', stream, group, consumer, 0, entry) == 1 then
    take(id, key)
  else  -- the entry is gone (a stream deleted by hand): the job goes back into the stream rather than be lost
    redis.call('ZREM', p .. 'running', id)
    if redis.call('HGET', key, 'state') == 'running' then
      redis.call('HSET', key, 'state', 'queued', 'entry', redis.call('XADD', stream, '*', 'id', id))
    end
  end
end
if #out < count * 3 then
  local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count - #out / 3, 'STREAMS', stream, '>')
  if read then
    for _, e in ipairs(read[1][2]) do
      local id = e[2][2]
      local key = p .. 'job:' .. id
      if redis.call('HGET', key, 'entry') == e[1] and redis.call('HGET', key, 'state') == 'queued' then
        take(id, key)
      else  -- an orphan (its job was re-queued under a newer entry, or is gone): drop it
        redis.call('XACK', stream, group, e[1])
        redis.call('XDEL', stream, e[1])
      end
    end
  end
end
return out
"""

# ARGV: prefix, group, then per call: id, receipt, action, now-or-deadline, error (the deadline of an extend, the
# due time of a retry). Calls run in order; returns 1, or 0 for a lost claim, per call.
SETTLE = """
local p, group = ARGV[1], ARGV[2]
local stream, running, live = p .. 'stream', p .. 'running', p .. 'live'
local out = {}
for i = 3, #ARGV, 5 do
  local id, action = ARGV[i], ARGV[i + 2]
  local key = p .. 'job:' .. id
  local state, receipt, entry = unpack(redis.call('HMGET', key, 'state', 'receipt', 'entry'))
  if state ~= 'running' or receipt ~= ARGV[i + 1] then
    out[#out + 1] = 0
  elseif action == 'extend' then
    redis.call('ZADD', running, ARGV[i + 3], id)
    out[#out + 1] = 1
  else
    redis.call('XACK', stream, group, entry)
    redis.call('XDEL', stream, entry)
    redis.call('ZREM', running, id)
    if action == 'ack' then
      redis.call('DEL', key)
      redis.call('ZREM', live, id)
    elseif action == 'retry' then
      redis.call('HSET', key, 'state', 'queued', 'err', ARGV[i + 4], 'entry', '')
      redis.call('HDEL', key, 'receipt')
      redis.call('ZADD', p .. 'delayed', ARGV[i + 3], id)
    else
      redis.call('HSET', key, 'state', 'dead', 'err', ARGV[i + 4], 'entry', '')
      redis.call('HDEL', key, 'receipt')
      redis.call('ZREM', live, id)
      redis.call('ZADD', p .. 'dead', redis.call('HGET', key, 'enq'), id)
    end
    out[#out + 1] = 1
  end
end
return out
"""

REQUEUE = """
local p, id = ARGV[1], ARGV[2]
local key = p .. 'job:' .. id
if redis.call('HGET', key, 'state') ~= 'dead' then return 0 end
local entry = redis.call('XADD', p .. 'stream', '*', 'id', id)
redis.call('HSET', key, 'state', 'queued', 'attempts', 0, 'entry', entry)
redis.call('ZREM', p .. 'dead', id)
redis.call('ZADD', p .. 'live', redis.call('HGET', key, 'enq'), id)
return 1
"""

# Prune: expired de-duplication records, then the stream below its oldest entry still pending (or, with none
# pending, below the last delivered one: every entry not yet delivered is newer), so no pending entry is dropped.
PRUNE = """
local p, group, now = ARGV[1], ARGV[2], ARGV[3]
local pruned = redis.call('ZREMRANGEBYSCORE', p .. 'dedupes', '-inf', now)
local stream = p .. 'stream'
if redis.call('EXISTS', stream) == 1 then
  redis.pcall('XGROUP', 'CREATE', stream, group, '0')
  local summary = redis.call('XPENDING', stream, group)
  local minid = summary[2]
  if not minid then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
      for i = 1, #g, 2 do if g[i] == 'name' and g[i + 1] == group then
        for j = 1, #g, 2 do if g[j] == 'last-delivered-id' then minid = g[j + 1] end end
      end end
    end
  end
  if minid then redis.call('XTRIM', stream, 'MINID', minid) end
end
return pruned
"""
