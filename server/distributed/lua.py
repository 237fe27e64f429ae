"""The queue's state changes as Lua scripts, each atomic in Redis: a prompt's record (a hash), its
place in the `queued` / `running` / `history` indexes and its entry on its lane's stream always
change together, so a crash of any process between two steps cannot leave them disagreeing.

Every script takes the key prefix (`{fluxloom}:`) as ARGV[1] and builds the names of lane
streams and prompt records from it (all keys share one hash tag). Record fields: status, number,
lane, msg (the stream entry id), worker, created, origin, client_id, prompt, extra_data, outputs,
plan, inputs, interrupt, node/value/max (progress at the last heartbeat), deliveries, result,
messages, error, finished, seq.
"""

# Shared helpers, prepended to every script.
_COMMON = r"""
local P = ARGV[1]
local G = 'workers'
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end
-- Tell front ends that the queue changed (`bus`) and, unless `quiet`, wake idle workers
-- (`doorbell`). Claims and results are quiet: the worker's advertisement that follows them
-- rings, and carries what the others need to route again.
local function ring(what, quiet)
  if not quiet then redis.call('XADD', P .. 'doorbell', 'MAXLEN', '~', 100, '*', 'r', what) end
  redis.call('XADD', P .. 'bus', 'MAXLEN', '~', 1000, '*', 'q', what)
end
-- Drop a finished entry from its lane; an empty lane disappears with its stream and group.
local function drop(lane, msg)
  local s = P .. 'lane:' .. lane
  if redis.call('EXISTS', s) == 0 then return end
  redis.call('XACK', s, G, msg)
  redis.call('XDEL', s, msg)
  if redis.call('XLEN', s) == 0 then
    redis.call('DEL', s)
    redis.call('HDEL', P .. 'lanes', lane)
  end
end
local function push(lane, meta, pid)
  local s = P .. 'lane:' .. lane
  if redis.call('EXISTS', s) == 0 then
    redis.call('XGROUP', 'CREATE', s, G, '0', 'MKSTREAM')
  end
  redis.call('HSET', P .. 'lanes', lane, meta)
  return redis.call('XADD', s, '*', 'p', pid)
end
"""

# ARGV: prefix, prompt_id, number ('' = next), front ('1'), lane, lane meta, field, value, ...
# Returns the number, or false when the id is taken.
ENQUEUE = (
    _COMMON
    + r"""
local pk = P .. 'prompt:' .. ARGV[2]
if redis.call('EXISTS', pk) == 1 then return false end
local number = ARGV[3]
if number == '' then
  local n = redis.call('INCR', P .. 'counter')
  if ARGV[4] == '1' then number = tostring(-n) else number = tostring(n) end
end
local msg = push(ARGV[5], ARGV[6], ARGV[2])
redis.call('HSET', pk, 'status', 'pending', 'number', number, 'lane', ARGV[5], 'msg', msg,
  'created', string.format('%.6f', now()), unpack(ARGV, 7))
redis.call('ZADD', P .. 'queued', number, ARGV[2])
ring('queued')
return number
"""
)

# ARGV: prefix, lane ids as [lane, meta] pairs ... -> lanes with the id of the first entry not
# yet delivered (false when none), the live workers' adverts, and Redis' clock.
SNAPSHOT = (
    _COMMON
    + r"""
local lanes = {}
local all = redis.call('HGETALL', P .. 'lanes')
for i = 1, #all, 2 do
  local s = P .. 'lane:' .. all[i]
  local head = false
  if redis.call('EXISTS', s) == 1 then
    local last = '0-0'
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', s)) do
      for j = 1, #g, 2 do if g[j] == 'last-delivered-id' then last = g[j + 1] end end
    end
    local h = redis.call('XRANGE', s, '(' .. last, '+', 'COUNT', 1)
    if #h > 0 then head = h[1][1] end
  end
  lanes[#lanes + 1] = {all[i], all[i + 1], head}
end
local workers = {}
for _, name in ipairs(redis.call('SMEMBERS', P .. 'workers')) do
  workers[#workers + 1] = {name, redis.call('GET', P .. 'worker:' .. name)}
end
return {string.format('%.6f', now()), lanes, workers}
"""
)

# ARGV: prefix, worker, lane ids in the order to try. Delivers the first pending prompt of the
# first lane that has one and marks it running; entries of deleted or finished prompts are
# dropped on the way. Returns {lane, msg, prompt_id, record fields...} or false.
CLAIM = (
    _COMMON
    + r"""
for i = 3, #ARGV do
  local lane = ARGV[i]
  local s = P .. 'lane:' .. lane
  while redis.call('EXISTS', s) == 1 do
    local r = redis.call('XREADGROUP', 'GROUP', G, ARGV[2], 'COUNT', 1, 'STREAMS', s, '>')
    if not r then break end
    local entry = r[1][2][1]
    local msg, pid = entry[1], entry[2][2]
    local pk = P .. 'prompt:' .. pid
    if redis.call('HGET', pk, 'status') == 'pending' then
      redis.call('HSET', pk, 'status', 'running', 'worker', ARGV[2], 'msg', msg, 'deliveries', 1,
        'claimed', string.format('%.6f', now()))
      redis.call('ZREM', P .. 'queued', pid)
      redis.call('SADD', P .. 'running', pid)
      ring('claimed', true)
      return {lane, msg, pid, redis.call('HGETALL', pk)}
    end
    drop(lane, msg)
  end
end
return false
"""
)

# ARGV: prefix, worker, min idle ms, max deliveries, dead_only ('1'), lane ids...
# A worker takes over the first entry whose holder stopped heart-beating (XAUTOCLAIM); an entry
# already delivered max-deliveries times comes back as 'dead' for the caller to dead-letter.
# With dead_only (the janitor of front ends and idle workers) only those are taken.
RECLAIM = (
    _COMMON
    + r"""
local me, idle, max, dead_only = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1'
-- `before`: how many times the entry was delivered before this claim
local function take(lane, s, msg, pid, before)
  local pk = P .. 'prompt:' .. pid
  if redis.call('HGET', pk, 'status') ~= 'running' then
    drop(lane, msg)
    return nil
  end
  local kind, deliveries = 'run', before + 1
  if dead_only or before >= max then kind, deliveries = 'dead', before end
  local previous = redis.call('HGET', pk, 'worker') or ''
  redis.call('HSET', pk, 'worker', me, 'deliveries', deliveries, 'previous_worker', previous)
  ring('reclaimed')
  return {kind, lane, msg, pid, redis.call('HGETALL', pk)}
end
for i = 6, #ARGV do
  local lane = ARGV[i]
  local s = P .. 'lane:' .. lane
  if redis.call('EXISTS', s) == 1 then
    if dead_only then
      for _, p in ipairs(redis.call('XPENDING', s, G, 'IDLE', idle, '-', '+', 100)) do
        if p[4] >= max then
          local c = redis.call('XCLAIM', s, G, me, idle, p[1])
          if c[1] then
            local got = take(lane, s, p[1], c[1][2][2], p[4])
            if got then return got end
          end
        end
      end
    else
      local cursor = '0-0'
      repeat
        local r = redis.call('XAUTOCLAIM', s, G, me, idle, cursor, 'COUNT', 1)
        cursor = r[1]
        local e = r[2][1]
        if e then
          local p = redis.call('XPENDING', s, G, e[1], e[1], 1)
          local got = take(lane, s, e[1], e[2][2], p[1][4] - 1)
          if got then return got end
        end
      until cursor == '0-0' or redis.call('EXISTS', s) == 0
    end
  end
end
return false
"""
)

# ARGV: prefix, worker, prompt_id, lane, msg, node, value, max -> -1 lost (another worker took
# it over, or it is gone), 1 an interrupt was asked, 0 fine. Resets the entry's idle time.
TOUCH = (
    _COMMON
    + r"""
local s = P .. 'lane:' .. ARGV[4]
local pk = P .. 'prompt:' .. ARGV[3]
if redis.call('EXISTS', s) == 0 or redis.call('HGET', pk, 'worker') ~= ARGV[2] then return -1 end
local p = redis.call('XPENDING', s, G, ARGV[5], ARGV[5], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return -1 end
redis.call('XCLAIM', s, G, ARGV[2], 0, ARGV[5], 'JUSTID')
redis.call('HSET', pk, 'node', ARGV[6], 'value', ARGV[7], 'max', ARGV[8])
if redis.call('HGET', pk, 'interrupt') == '1' then return 1 end
return 0
"""
)

# ARGV: prefix, worker, prompt_id, lane, msg, status, result, messages, error, history cap,
# events key suffix (origin), events maxlen, events ttl ms, dead ('1' or ''), n final events,
# then (client, event, data) per final event.
# Records the result only when this worker still holds the prompt; then acknowledges the entry
# and sends the final events (in the same step, so a result is reported exactly once).
# Returns 1 recorded, 0 not (finished already, or another worker holds it now).
FINISH = (
    _COMMON
    + r"""
local me, pid, lane, msg = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local pk = P .. 'prompt:' .. pid
local status = redis.call('HGET', pk, 'status')
if status ~= 'running' then
  if status == false or status == 'success' or status == 'error' or status == 'interrupted' then
    drop(lane, msg)
  end
  return 0
end
if redis.call('HGET', pk, 'worker') ~= me then return 0 end
local seq = redis.call('INCR', P .. 'seq')
redis.call('HSET', pk, 'status', ARGV[6], 'result', ARGV[7], 'messages', ARGV[8], 'error', ARGV[9],
  'finished', string.format('%.6f', now()), 'seq', seq)
redis.call('HDEL', pk, 'plan', 'interrupt')
redis.call('SREM', P .. 'running', pid)
redis.call('ZADD', P .. 'history', seq, pid)
drop(lane, msg)
local cap = tonumber(ARGV[10])
local extra = redis.call('ZCARD', P .. 'history') - cap
if extra > 0 then
  for _, old in ipairs(redis.call('ZPOPMIN', P .. 'history', extra)) do
    if old ~= pid then redis.call('DEL', P .. 'prompt:' .. old) end
  end
end
if ARGV[14] == '1' then
  redis.call('XADD', P .. 'dead', 'MAXLEN', '~', 10000, '*', 'p', pid, 'error', ARGV[9])
end
local ev = P .. 'events:' .. ARGV[11]
local n = tonumber(ARGV[15])
for i = 0, n - 1 do
  local b = 16 + i * 3
  redis.call('XADD', ev, 'MAXLEN', '~', tonumber(ARGV[12]), '*',
    'c', ARGV[b], 'e', ARGV[b + 1], 'd', ARGV[b + 2])
end
if n > 0 then redis.call('PEXPIRE', ev, tonumber(ARGV[13])) end
ring('finished', true)
return 1
"""
)

# ARGV: prefix, worker, prompt_id, lane, msg, front lane, front lane meta. A worker that stops
# gracefully gives its running prompt back, at the head of its models' queue.
REQUEUE = (
    _COMMON
    + r"""
local pk = P .. 'prompt:' .. ARGV[3]
if redis.call('HGET', pk, 'status') ~= 'running' or redis.call('HGET', pk, 'worker') ~= ARGV[2] then
  return 0
end
drop(ARGV[4], ARGV[5])
local msg = push(ARGV[6], ARGV[7], ARGV[3])
redis.call('HSET', pk, 'status', 'pending', 'lane', ARGV[6], 'msg', msg, 'worker', '')
redis.call('HDEL', pk, 'node', 'value', 'max')
redis.call('SREM', P .. 'running', ARGV[3])
redis.call('ZADD', P .. 'queued', redis.call('HGET', pk, 'number'), ARGV[3])
ring('requeued')
return 1
"""
)

# ARGV: prefix, all ('1'), prompt ids... Deletes pending prompts (never running ones).
DELETE_PENDING = (
    _COMMON
    + r"""
local ids = {}
if ARGV[2] == '1' then ids = redis.call('ZRANGE', P .. 'queued', 0, -1)
else for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end end
local n = 0
for _, pid in ipairs(ids) do
  local pk = P .. 'prompt:' .. pid
  if redis.call('HGET', pk, 'status') == 'pending' then
    local f = redis.call('HMGET', pk, 'lane', 'msg')
    drop(f[1], f[2])
    redis.call('DEL', pk)
    redis.call('ZREM', P .. 'queued', pid)
    n = n + 1
  end
end
if n > 0 then ring('deleted') end
return n
"""
)

# ARGV: prefix, all ('1'), prompt ids... Deletes finished prompts.
DELETE_HISTORY = (
    _COMMON
    + r"""
local ids = {}
if ARGV[2] == '1' then ids = redis.call('ZRANGE', P .. 'history', 0, -1)
else for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end end
local n = 0
for _, pid in ipairs(ids) do
  if redis.call('ZREM', P .. 'history', pid) == 1 then
    redis.call('DEL', P .. 'prompt:' .. pid)
    n = n + 1
  end
end
return n
"""
)

# ARGV: prefix, prompt_id -> the worker running it (after flagging the interrupt), or false.
FLAG_INTERRUPT = (
    _COMMON
    + r"""
local pk = P .. 'prompt:' .. ARGV[2]
if redis.call('HGET', pk, 'status') ~= 'running' then return false end
redis.call('HSET', pk, 'interrupt', '1')
return redis.call('HGET', pk, 'worker')
"""
)

# ARGV: prefix, kind/subfolder/filename, digest, data, ttl ms -> 1 stored (or the same file is
# there), 0 the name holds another file.
PUT_FILE = r"""
local k = ARGV[1] .. 'file:' .. ARGV[2]
local have = redis.call('HGET', k, 'digest')
if have and have ~= ARGV[3] then return 0 end
if not have then redis.call('HSET', k, 'digest', ARGV[3], 'data', ARGV[4]) end
redis.call('PEXPIRE', k, ARGV[5])
return 1
"""
