"""The Redis scripts behind `worker.tickets`: every change to a ticket's hold and line is one
atomic script, so that two workers never see a ticket half handed on.

    ENTER            take a place in the line, and the hold when it is the job's turn; else
                     park the job's payload here (or answer that its connection has a backlog)
    LEAVE            drop the hold (and the place, for a job with its record), and hand the
                     ticket to the first live job of the line if it waits here
    WRITE_AND_LEAVE  a job's record (`worker.records`) and LEAVE, in one call
    REAP             hand on every ticket whose holder died or whose first places went quiet

What a live place is, and the keys these scripts keep, are described in `worker.tickets`. Each
script's KEYS and ARGV are listed above it; `TicketLines` is its only caller.
"""

from __future__ import annotations

from worker.keys import TICKET_LINE_SUFFIX, TICKET_PARKED_SUFFIX, TICKET_SEEN_SUFFIX
from worker.records import WRITE_RECORD_LUA

# Shared by the scripts. G holds the global key names: result and claim prefixes, deferred
# set and payloads, backlog payloads, waiting hash, lines set. A ticket's other keys are its
# hold key (`base`) plus LINE, SEEN or PARKED.
_COMMON = (
    (
        f"local LINE, SEEN, PARKED = '{TICKET_LINE_SUFFIX}', '{TICKET_SEEN_SUFFIX}', "
        f"'{TICKET_PARKED_SUFFIX}'\n"
    )
    + """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function alive(base, job_id, now, quiet_ms, g)
  if redis.call('EXISTS', g.result .. job_id) == 1 then return false end
  if redis.call('EXISTS', g.claim .. job_id) == 1 then return true end
  if redis.call('ZSCORE', g.deferred, job_id) then return true end
  if redis.call('HEXISTS', g.backlog, job_id) == 1 then return true end
  if redis.call('HEXISTS', base .. PARKED, job_id) == 1 then return true end
  local seen = redis.call('HGET', base .. SEEN, job_id)
  return seen and now - tonumber(seen) < quiet_ms
end

local function forget(base, job_id, g)
  redis.call('ZREM', base .. LINE, job_id)
  redis.call('HDEL', base .. SEEN, job_id)
  redis.call('HDEL', base .. PARKED, job_id)
  redis.call('HDEL', g.waiting, job_id)
end

-- The first live place of the line, dropping dead ones before it; false for an empty line.
local function first_live(base, now, quiet_ms, g)
  while true do
    local first = redis.call('ZRANGE', base .. LINE, 0, 0)
    if #first == 0 then return false end
    if alive(base, first[1], now, quiet_ms, g) then return first[1] end
    forget(base, first[1], g)
  end
end

-- The job holding the ticket, or false. A hold whose job has a record is over.
local function holder(base, g)
  local job_id = redis.call('GET', base)
  if job_id and redis.call('EXISTS', g.result .. job_id) == 0 then return job_id end
  if job_id then redis.call('DEL', base) end
  return false
end

local function tidy(base, g)
  if redis.call('HLEN', base .. PARKED) == 0 then redis.call('SREM', g.lines, base) end
  if redis.call('ZCARD', base .. LINE) == 0 then redis.call('DEL', base .. SEEN) end
end

-- Give a free ticket to the first live job of its line if that job waits here: it is moved
-- to the deferred set, due now, for the mover to publish. Returns 1 if a job was moved.
local function hand_off(base, now, quiet_ms, g)
  local moved = 0
  if not holder(base, g) then
    local first = first_live(base, now, quiet_ms, g)
    local payload = first and redis.call('HGET', base .. PARKED, first)
    if payload then
      redis.call('HSET', g.deferred_jobs, first, payload)
      redis.call('ZADD', g.deferred, now, first)
      redis.call('HDEL', base .. PARKED, first)
      redis.call('HDEL', g.waiting, first)
      redis.call('HSET', base .. SEEN, first, now)
      moved = 1
    end
  end
  tidy(base, g)
  return moved
end
"""
)

# KEYS: hold, waiting, lines, deferred, deferred jobs, backlog jobs, backlog, backlog taken
# ARGV: job_id, submitted_ms, hold_ms, quiet_ms, payload, result prefix, claim prefix,
#       check backlog (1/0), keep_ms, only take a place (1/0)
ENTER = (
    _COMMON
    + """
local base, job = KEYS[1], ARGV[1]
local g = {result = ARGV[6], claim = ARGV[7], deferred = KEYS[4], deferred_jobs = KEYS[5],
           backlog = KEYS[6], waiting = KEYS[2], lines = KEYS[3]}
local now, quiet = now_ms(), tonumber(ARGV[4])
redis.call('ZADD', base .. LINE, 'NX', ARGV[2], job)
redis.call('HSET', base .. SEEN, job, now)
redis.call('PEXPIRE', base .. LINE, ARGV[9])
redis.call('PEXPIRE', base .. SEEN, ARGV[9])
if ARGV[10] == '1' then return {'placed', false} end
-- A job joining its connection's backlog keeps its place: a later job of its ticket that
-- arrives once the backlog is released cannot overtake it.
if ARGV[8] == '1' and redis.call('ZCARD', KEYS[7]) + redis.call('ZCARD', KEYS[8]) > 0 then
  return {'backlog', false}
end
local ahead = holder(base, g)
if not ahead then ahead = first_live(base, now, quiet, g) end
if ahead == job then
  redis.call('SET', base, job, 'PX', ARGV[3])
  redis.call('HDEL', base .. PARKED, job)
  redis.call('HDEL', KEYS[2], job)
  tidy(base, g)
  return {'go', false}
end
redis.call('HSET', base .. PARKED, job, ARGV[5])
redis.call('PEXPIRE', base .. PARKED, ARGV[9])
redis.call('HSET', KEYS[2], job, base)
redis.call('SADD', KEYS[3], base)
return {'wait', ahead}
"""
)

# KEYS: hold, waiting, lines, deferred, deferred jobs, backlog jobs
# ARGV: job_id, finished (1/0), quiet_ms, result prefix, claim prefix
_LEAVE_LUA = """
local function leave(KEYS, ARGV)
  local base, job = KEYS[1], ARGV[1]
  local g = {result = ARGV[4], claim = ARGV[5], deferred = KEYS[4], deferred_jobs = KEYS[5],
             backlog = KEYS[6], waiting = KEYS[2], lines = KEYS[3]}
  if redis.call('GET', base) == job then redis.call('DEL', base) end
  local now = now_ms()
  if ARGV[2] == '1' then
    forget(base, job, g)
  elseif redis.call('ZSCORE', base .. LINE, job) then
    redis.call('HSET', base .. SEEN, job, now)
  end
  return hand_off(base, now, tonumber(ARGV[3]), g)
end
"""
LEAVE = _COMMON + _LEAVE_LUA + "return leave(KEYS, ARGV)\n"

# A record and the end of its job's turn, in one atomic call (one round trip).
# KEYS: the record write's, then the leave's. ARGV: the record write's, the leave's, then how
# many KEYS and ARGV are the record write's.
WRITE_AND_LEAVE = (
    WRITE_RECORD_LUA
    + _COMMON
    + _LEAVE_LUA
    + """
local function slice(list, first, last)
  local out = {}
  for i = first, last do table.insert(out, list[i]) end
  return out
end
local nkeys, nargs = tonumber(ARGV[#ARGV - 1]), tonumber(ARGV[#ARGV])
local written = write_record(slice(KEYS, 1, nkeys), slice(ARGV, 1, nargs))
leave(slice(KEYS, nkeys + 1, #KEYS), slice(ARGV, nargs + 1, #ARGV - 2))
return written
"""
)

# KEYS: waiting, lines, deferred, deferred jobs, backlog jobs
# ARGV: quiet_ms, result prefix, claim prefix
REAP = (
    _COMMON
    + """
local g = {result = ARGV[2], claim = ARGV[3], deferred = KEYS[3], deferred_jobs = KEYS[4],
           backlog = KEYS[5], waiting = KEYS[1], lines = KEYS[2]}
local now, moved = now_ms(), 0
for _, base in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  moved = moved + hand_off(base, now, tonumber(ARGV[1]), g)
end
return moved
"""
)
