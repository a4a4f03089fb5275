"""The rate governor's Lua scripts: each runs atomically in Redis, on Redis's clock.

`worker.governor` says what they are for and decides their arguments; here is what each does
to a connection's keys (`script_keys` gives them in the order the scripts take them): the
sliding log of grants, the pause Halo asked for, the limit Halo stated, the sequence that
names grants, and the count of 429s in a row.
"""

from __future__ import annotations

from typing import Final

from worker.keys import rate_key, rate_learned_key, rate_pause_key, rate_seq_key, rate_strikes_key

# KEYS: log, pause, learned, seq, strikes. ARGV: limit, window_ms, n, member prefix, pad
# fraction, minimum pad ms. Returns {granted (1/0), wait_ms, limit, window_ms, in_window}, and
# on a grant its reservation (the members' prefix) and the shortest pad of the windows (ms).
_ACQUIRE_LUA: Final = """
local function acquire()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rules = {{tonumber(ARGV[1]), tonumber(ARGV[2])}}
local learned = redis.call('GET', KEYS[3])
if learned then
  local l, w = string.match(learned, '(%d+)/(%d+)')
  if l then table.insert(rules, {tonumber(l), tonumber(w)}) end
end
local longest, tightest = 0, rules[1]
for _, rule in ipairs(rules) do
  rule[3] = rule[2] + math.max(math.floor(rule[2] * tonumber(ARGV[5])), tonumber(ARGV[6]))
  longest = math.max(longest, rule[3])
  if rule[1] / rule[2] < tightest[1] / tightest[2] then tightest = rule end
end
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then return {0, paused, tightest[1], tightest[2], -1} end
-- Times are whole milliseconds, so a window includes its oldest millisecond: two grants a
-- whole span apart on Redis's clock may be a little less than a span apart in truth.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. tostring(now - longest))
local n = tonumber(ARGV[3])
local wait, binding, in_window = 0, tightest, 0
for i, rule in ipairs(rules) do
  local since = tostring(now - rule[3])
  local count = redis.call('ZCOUNT', KEYS[1], since, '+inf')
  if i == 1 then in_window = count end
  if count + n > rule[1] then
    -- Room comes when enough of the oldest entries in this window have left it.
    local need = count + n - rule[1]
    local entry = redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES',
                             'LIMIT', need - 1, 1)
    local until_room = rule[3]
    if entry[2] then until_room = math.max(1, tonumber(entry[2]) + rule[3] + 1 - now) end
    if until_room > wait then wait, binding = until_room, rule end
  end
end
if wait > 0 then return {0, wait, binding[1], binding[2], in_window} end
local seq = redis.call('INCR', KEYS[4])
for i = 1, n do
  redis.call('ZADD', KEYS[1], now, ARGV[4] .. seq .. ':' .. i)
end
redis.call('PEXPIRE', KEYS[1], longest)
redis.call('PEXPIRE', KEYS[4], longest)
local shortest_pad = longest
for _, rule in ipairs(rules) do shortest_pad = math.min(shortest_pad, rule[3] - rule[2]) end
return {1, 0, tightest[1], tightest[2], in_window + n, ARGV[4] .. seq, shortest_pad}
end
"""
ACQUIRE: Final = _ACQUIRE_LUA + "return acquire()\n"

# ACQUIRE, and on a grant, in the same atomic call, the notes that must be written before the
# request goes out (a write journal's: `worker.halo.client.Rider`). KEYS and ARGV: ACQUIRE's,
# then one hash key per note (KEYS[6], ...) and its field and value (ARGV[7], ARGV[8], ...).
# A refusal writes no note: its request is not sent.
ACQUIRE_NOTING: Final = (
    _ACQUIRE_LUA
    + """
local answer = acquire()
if answer[1] == 1 then
  for i = 6, #KEYS do
    redis.call('HSET', KEYS[i], ARGV[2 * i - 5], ARGV[2 * i - 4])
  end
end
return answer
"""
)

# KEYS: log. ARGV: reservation, n, longest span ms
# A grant taken ahead of its requests (a released batch) is moved to the moment they are sent,
# so the log holds them when Halo sees them, not when they were granted. Entries that already
# left the log are not brought back: those requests must take budget again.
RESTAMP: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local kept = 0
for i = 1, tonumber(ARGV[2]) do
  local member = ARGV[1] .. ':' .. i
  if redis.call('ZSCORE', KEYS[1], member) then
    redis.call('ZADD', KEYS[1], 'XX', now, member)
    kept = kept + 1
  end
end
if kept > 0 and redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return kept
"""

# KEYS: log. ARGV: member, span ms. Moves one entry to now, or adds it again if it already left
# the log (counting a request twice for a while is safe; missing one is not).
STAMP: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return now
"""

# KEYS: log, pause, learned, seq, strikes. ARGV: pause_ms (-1: none given), learned
# "requests/window_ms" or "", learned ttl_s, strikes ttl_s, max pause ms, first pause ms,
# jitter in [0, 1)
OBSERVE_429: Final = """
if ARGV[2] ~= '' then redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[3]) end
local strikes = redis.call('INCR', KEYS[5])
redis.call('EXPIRE', KEYS[5], ARGV[4])
local pause = tonumber(ARGV[1])
if pause < 0 then
  -- No Retry-After: back off the whole connection exponentially with consecutive 429s,
  -- with jitter, up to the cap (FACTS: "up to about a minute; 5 s is known to be too short").
  local ceiling = math.min(tonumber(ARGV[5]), tonumber(ARGV[6]) * 2 ^ (strikes - 1))
  pause = math.floor(ceiling * (0.5 + 0.5 * tonumber(ARGV[7])))
end
local current = redis.call('PTTL', KEYS[2])
-- `Retry-After: 0` (or a date already past) asks for no pause; PX 0 would be an error.
if pause > 0 and current < pause then redis.call('SET', KEYS[2], '1', 'PX', pause) end
return pause
"""


def script_keys(name: str) -> list[str]:
    """A connection's rate keys, in the order the scripts' KEYS take them."""
    return [
        rate_key(name),
        rate_pause_key(name),
        rate_learned_key(name),
        rate_seq_key(name),
        rate_strikes_key(name),
    ]
