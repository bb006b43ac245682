"""The Lua scripts of a shared budget: every change to the shared state is one of these,
atomic on the Redis server and timed by the server's own clock (``TIME``), so hosts whose
clocks disagree still agree on leases.

Keys of budget ``NAME`` (the ``{NAME}`` hash tag keeps them in one Redis Cluster slot):

- ``slots``  ZSET  member -> lease expiry (ms). ``r:KEY`` a submission's reservation (its
  idempotency key), ``t:ID`` a task on the server. Counted against the capacity.
- ``limbo``  ZSET  reservations whose owner vanished mid-submission (the task may run):
  counted until their hold (``RetryPolicy.unsettled_hold``) ends.
- ``queue``  ZSET  waiting reservations -> arrival number (first come, first served).
- ``qlease`` ZSET  waiting reservations -> expiry; a waiter whose process died leaves.
- ``meta``   HASH  ``cap``/``credit``/``slow``/``ceiling`` (adaptive limit), ``seq``, ``born`` (when
  this store was created: a restarted, empty Redis has a new one), ``settle`` (no grants
  before it), ``rejections``.
- ``tat``    STRING  the request budget's theoretical arrival time (GCRA).
- channel ``events``: ``wake`` when slots may be free, ``pause:MS`` for a Retry-After.
"""

from __future__ import annotations

KEY_NAMES = ("slots", "limbo", "queue", "qlease", "meta", "tat")

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# KEYS: slots limbo queue qlease meta tat channel
# ARGV: lease_ms hold_ms fixed(0 = adaptive) initial maximum decrease accepted rejected
#       pause_ms known_born n_add n_gone n_wait probe_patience, then the add members,
#       the gone members and (member, front) pairs of the waiters.
# Returns {granted members, orphaned task ids, used, capacity, born}.
SYNC = _NOW + """
local slots, limbo, queue, qlease, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local lease, hold, fixed = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local initial, maximum, decrease = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local accepted, rejected = tonumber(ARGV[7]), tonumber(ARGV[8])
local pause, known_born = tonumber(ARGV[9]), ARGV[10]
local n_add, n_gone, n_wait = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local patience = tonumber(ARGV[14])
local base = 14

local born = redis.call('HGET', meta, 'born')
if not born then
  born = tostring(now)
  redis.call('HSET', meta, 'born', born, 'cap', initial, 'slow', 1, 'credit', 0, 'seq', 0)
end
if known_born ~= '' and known_born ~= born then
  -- Redis lost the budget (restarted empty): grant nothing until every live process
  -- has put back the tasks it follows (each renews at least every lease / 3).
  redis.call('HSET', meta, 'settle', now + math.floor(lease / 2))
end

local function used()
  return redis.call('ZCARD', slots) + redis.call('ZCARD', limbo)
end
local function capacity()
  if fixed > 0 then return fixed end
  return tonumber(redis.call('HGET', meta, 'cap'))
end
local used_before, cap_before = used(), capacity()

-- 1. the adaptive limit (before the removals: a rejected submission still holds its slot)
if fixed == 0 and (accepted > 0 or rejected > 0) then
  local cap = tonumber(redis.call('HGET', meta, 'cap'))
  local credit = tonumber(redis.call('HGET', meta, 'credit'))
  local slow = tonumber(redis.call('HGET', meta, 'slow'))
  local ceiling = tonumber(redis.call('HGET', meta, 'ceiling') or '0')
  local count = used()
  if rejected > 0 then
    redis.call('HINCRBY', meta, 'rejections', rejected)
    slow, credit = 0, 0
    local others = count - 1
    if others <= cap then  -- else: still draining after an earlier decrease
      -- at or above the last 429's count the account is full (keep what is in flight);
      -- below it the limit shrank: back off (as _slots.next_capacity)
      if others >= ceiling then cap = math.max(1, others)
      else cap = math.max(1, math.floor(math.max(others, 1) * decrease)) end
      ceiling = others
    end
  end
  for _ = 1, accepted do
    if count >= cap then
      if slow == 1 then
        cap = math.min(maximum, cap + 1)
      else
        credit = credit + 1
        local needed = cap
        if cap >= ceiling then needed = cap * patience end  -- probing past the last 429
        if credit >= needed then credit = 0; cap = math.min(maximum, cap + 1) end
      end
    end
  end
  redis.call('HSET', meta, 'cap', cap, 'credit', credit, 'slow', slow, 'ceiling', ceiling)
end
if pause > 0 then
  redis.call('PUBLISH', KEYS[7], 'pause:' .. pause)
end

-- 2. members this process holds (new ones, renewals, re-registrations after a restart)
for i = 1, n_add do
  redis.call('ZADD', slots, now + lease, ARGV[base + i])
end
base = base + n_add

-- 3. members given back
for i = 1, n_gone do
  local member = ARGV[base + i]
  redis.call('ZREM', slots, member)
  redis.call('ZREM', limbo, member)
  redis.call('ZREM', queue, member)
  redis.call('ZREM', qlease, member)
end
base = base + n_gone

-- 4. the leases of vanished processes: their tasks are handed to this process (it reads
-- them, then follows or releases them); their reservations wait out the hold in limbo
for _, member in ipairs(redis.call('ZRANGEBYSCORE', qlease, '-inf', now, 'LIMIT', 0, 100)) do
  redis.call('ZREM', queue, member)
  redis.call('ZREM', qlease, member)
end
redis.call('ZREMRANGEBYSCORE', limbo, '-inf', now)
local orphans = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', slots, '-inf', now, 'LIMIT', 0, 50)) do
  if string.sub(member, 1, 2) == 't:' then
    redis.call('ZADD', slots, now + lease, member)
    table.insert(orphans, string.sub(member, 3))
  else
    redis.call('ZREM', slots, member)
    redis.call('ZADD', limbo, now + hold, member)
  end
end

-- 5. the waiters: queue them (first come, first served; a retry after a 429 goes first)
-- and grant those at the head of the queue while slots are free
local mine = {}
for i = 0, n_wait - 1 do
  local member, front = ARGV[base + 2 * i + 1], ARGV[base + 2 * i + 2]
  mine[member] = true
  if not redis.call('ZSCORE', queue, member) then
    local number
    if front == '1' then
      local head = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
      number = (tonumber(head[2]) or 0) - 1
    else
      number = redis.call('HINCRBY', meta, 'seq', 1)
    end
    redis.call('ZADD', queue, number, member)
  end
  redis.call('ZADD', qlease, now + lease, member)
end
local cap = capacity()
local count = used()
local granted = {}
local settle = tonumber(redis.call('HGET', meta, 'settle') or '0')
if n_wait > 0 and count < cap and now >= settle then
  for _, member in ipairs(redis.call('ZRANGE', queue, 0, cap - count - 1)) do
    if mine[member] then
      redis.call('ZREM', queue, member)
      redis.call('ZREM', qlease, member)
      redis.call('ZADD', slots, now + lease, member)
      table.insert(granted, member)
    end
  end
  count = count + #granted
end
local opened = count < used_before or cap > cap_before or #granted > 0
if opened and count < cap and redis.call('ZCARD', queue) > 0 then
  redis.call('PUBLISH', KEYS[7], 'wake')  -- slots are free and others wait for them
end
return {granted, orphans, count, cap, born}
"""

# KEYS: slots; ARGV: members. A closing process hands its members over at once: their
# lease ends now, so the next live process adopts the tasks (or holds the reservations).
HAND_OVER = """
for i = 1, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', 0, ARGV[i])
end
return #ARGV
"""

# KEYS: tat; ARGV: emission interval (ms), tolerance (ms). Reserves the next request slot
# of the shared token bucket (GCRA) and returns how long to wait for it (ms).
PACE = _NOW + """
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local wait = math.max(0, tat - tolerance - now)
local next_tat = tat + interval
redis.call('SET', KEYS[1], next_tat, 'PX', math.floor(next_tat - now + 1000))
return wait
"""
