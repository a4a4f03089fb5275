"""The shared rate governor: one budget per Halo connection, kept in Redis for the whole fleet.

Halo limits each tenant to N requests per *rolling* window (FACTS, Rate limits), so the
governor keeps the same thing: a sliding log of the fleet's request times per connection (a
sorted set), and grants a request only while fewer than N lie inside the window. A Lua script
makes check-and-add atomic across every worker process on every host, and it reads Redis's
clock, so hosts whose clocks disagree still share one timeline (the scripts are
`worker.ratescripts`; this module decides their arguments and reads their answers).

The window is padded a little: Halo counts a request when it arrives, the governor when it
is granted, a few milliseconds earlier, and a request granted at the very edge of our window
must not land inside Halo's. On a loaded host the gap can outgrow the pad (a thread stalled
between grant and send, a full connection pool, a batch that reads and renders twenty jobs
before its POST): a request whose grant-to-answer time exceeded most of the pad has its entry
moved to the moment its answer came (`Governor.settle`), which is after Halo counted it, so
the log never runs ahead of Halo's window whatever the load. It costs one round trip, only
for such late requests. A released batch's prepaid entries are stamped as each of its
requests is sent (`Governor.spend_prepaid`), not when the batch starts.

It learns from Halo: a 429 whose text states ``N Requests per rolling M minute window`` lowers
the connection's limit for every worker, and a 429 pauses the connection for every worker until
``Retry-After``; without one, for a jittered pause that doubles with each 429 in a row, from
2 s up to a minute.

Keys, per connection:
    halo:rate:<name>          the sliding log (sorted set of grant times, ms)
    halo:rate:<name>:pause    set while Halo asked everyone to wait (string with a TTL)
    halo:rate:<name>:learned  the limit Halo stated, as "requests/window_ms" (string, 1 day)
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

import redis

from worker.connections import Connection
from worker.errors import BudgetExhausted, HaloRateLimited
from worker.keys import rate_key, rate_learned_key
from worker.ratelimit import RateLimit
from worker.ratescripts import ACQUIRE, ACQUIRE_NOTING, OBSERVE_429, RESTAMP, STAMP, script_keys
from worker.replication import DurableField

if TYPE_CHECKING:
    from worker.halo.client import Rider

log = logging.getLogger("halo.governor")

# Padding of the window: 5 % (at least 0.2 s) keeps 95 % of Halo's budget usable.
_PAD_FRACTION: Final = 0.05
_MIN_PAD_MS: Final = 200
# A request answered later than this share of the pad after asking for its grant is re-dated
# (`Governor.settle`). Halo counted it somewhere in that time, so while it is shorter than the
# pad, the padded window the log keeps still holds it; a fifth of the pad is left for what the
# measure cannot see (whole milliseconds in the log, where in the call Redis stamped it).
_LATE_SHARE_OF_PAD: Final = 0.8
# A 429 without Retry-After pauses the connection for 2, 4, 8 ... 60 s (jittered by half)
# as they follow each other; two quiet minutes start the count again.
_FIRST_PAUSE_MS: Final = 2_000
_MAX_PAUSE_MS: Final = 60_000
_STRIKES_TTL_S: Final = 120
# A learned limit is forgotten after a day, so that a raised tenant limit is used again.
_LEARNED_TTL_S: Final = 24 * 3600


@dataclass(frozen=True)
class Grant:
    """The governor's answer: granted, or how long until there is room. `limit`/`window_s`
    name the limit that refused, or (on a grant) the enforced one with the lowest rate;
    `in_window` counts grants in the configured window."""

    granted: bool
    wait_s: float
    limit: int
    window_s: float
    in_window: int
    reservation: str | None = None
    # The shortest pad of the enforced windows (a learned limit's may be shorter).
    pad_ms: int = _MIN_PAD_MS


class Governor:
    """The fleet's rate budget per Halo connection (implements `worker.halo.client.Budget`)."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._acquire = client.register_script(ACQUIRE)
        self._acquire_noting = client.register_script(ACQUIRE_NOTING)
        self._observe = client.register_script(OBSERVE_429)
        self._restamp = client.register_script(RESTAMP)
        self._stamp = client.register_script(STAMP)
        # The reservation a released batch spends, per thread: Celery's thread pool runs one
        # task per thread, and the batch's requests are sent from the thread that took it.
        self._spending = threading.local()

    def try_acquire(
        self, connection: Connection, n: int = 1, notes: Sequence[DurableField] = ()
    ) -> Grant:
        """Take room for `n` requests if there is room for all of them now; on a grant, write
        `notes` in the same atomic call, and return once the replicas they ask for have them
        (refused, nothing is written).

        Raises:
            NotReplicated: granted, but the notes' replicas did not confirm them in time: the
                requests must not be sent (their room stays taken, which errs on the safe side).
        """
        limit = connection.rate_limit
        keys = script_keys(connection.name)
        args: list[str | float] = [
            limit.requests,
            int(limit.window_s * 1000),
            n,
            "r:",
            _PAD_FRACTION,
            _MIN_PAD_MS,
        ]
        if notes:
            keys += [note.key for note in notes]
            args += [part for note in notes for part in (note.field, note.value)]
            raw = cast(
                list[Any],
                notes[0].acks.write(
                    self._redis,
                    " and ".join(note.what for note in notes),
                    lambda client: self._acquire_noting(keys=keys, args=args, client=client),
                ),
            )
        else:
            raw = cast(list[Any], self._acquire(keys=keys, args=args))
        return Grant(
            granted=bool(raw[0]),
            wait_s=int(raw[1]) / 1000,
            limit=int(raw[2]),
            window_s=int(raw[3]) / 1000,
            in_window=int(raw[4]),
            reservation=str(raw[5]) if len(raw) > 5 else None,
            pad_ms=int(raw[6]) if len(raw) > 6 else _MIN_PAD_MS,
        )

    def use_reservation(self, connection: Connection, reservation: str, n: int) -> int:
        """Spend a grant taken earlier (by the backlog dispatcher) now.

        Returns:
            How many of its `n` requests are still covered; the rest must take budget again.
        """
        longest_s = max(limit.window_s for limit in self.limits(connection))
        span_ms = int(longest_s * 1000 * (1 + _PAD_FRACTION)) + _MIN_PAD_MS
        kept = int(self._restamp(keys=[rate_key(connection.name)], args=[reservation, n, span_ms]))
        self._spending.reservation = (connection.name, reservation, 0)
        return kept

    def spend_prepaid(self, connection: Connection) -> str | None:
        """One request paid by the reservation this thread took last (`use_reservation`) is
        being sent now: its entry is stamped now, so the log holds it from the moment it
        goes, however long the batch took to get there.

        Returns:
            The entry's member (for `settle`), or None when this thread holds no
            reservation of `connection`.
        """
        held = getattr(self._spending, "reservation", None)
        if held is None or held[0] != connection.name:
            return None
        name, reservation, used = held
        self._spending.reservation = (name, reservation, used + 1)
        member = f"{reservation}:{used + 1}"
        self._stamp(keys=script_keys(name)[:1], args=[member, _span_ms(connection.rate_limit)])
        # The limits in force when the batch was granted are not known here: the shortest
        # pad any window has.
        return _handle(member, _MIN_PAD_MS)

    def settle(self, connection: Connection, member: str | None, elapsed_s: float) -> None:
        """A request granted as `member` (a handle from `acquire` or `spend_prepaid`) got its
        answer, or gave up, `elapsed_s` after its grant was asked for. If that is more than
        most of the shortest pad of the windows it was granted under, Halo may have counted it
        later than the log says: its entry moves to now, which is after Halo counted it."""
        if member is None:
            return
        entry, _, pad_ms = member.rpartition("@")
        if elapsed_s <= int(pad_ms) * _LATE_SHARE_OF_PAD / 1000:
            return
        try:
            self._stamp(
                keys=script_keys(connection.name)[:1], args=[entry, _span_ms(connection.rate_limit)]
            )
        except redis.RedisError as exc:
            # The request has been sent and answered: failing it now would send it again.
            # Its entry keeps its grant time, as before this correction existed.
            log.warning(
                "could not re-date a late request in the rate log",
                extra={"connection": connection.name, "error": type(exc).__name__},
            )

    def acquire(self, connection: Connection, riders: Sequence[Rider] = ()) -> str | None:
        """Take room for one request, and make `riders` durable before it is sent: a journal
        note to this Redis goes in the same call as the grant (`try_acquire`), any other is
        written alone first.

        Returns:
            The grant's entry in the log, for `settle` once the request has its answer.

        Raises:
            BudgetExhausted: no room now; `retry_after_s` says when there will be.
            NotReplicated: a rider did not reach the replicas it must.
        """
        notes: list[DurableField] = []
        for rider in riders:
            # Carried: a note to this Redis that waits for the same replicas as the others
            # (one WAIT for all).
            if (
                isinstance(rider, DurableField)
                and rider.client is self._redis
                and (not notes or rider.acks == notes[0].acks)
            ):
                notes.append(rider)
            else:
                rider.write()
        grant = self.try_acquire(connection, notes=notes)
        if not grant.granted:
            raise BudgetExhausted(
                f"connection {connection.name!r} has used its Halo budget "
                f"({grant.limit} requests per {grant.window_s:g} s); room again in "
                f"{grant.wait_s:.1f} s",
                retry_after_s=grant.wait_s,
            )
        if grant.reservation is None:
            return None
        return _handle(f"{grant.reservation}:1", grant.pad_ms)

    def observe_rate_limited(self, connection: Connection, error: HaloRateLimited) -> None:
        """Share a 429 with the fleet: pause the connection, and learn Halo's stated limit."""
        learned = ""
        if error.learned_limit is not None:
            requests, window_s = error.learned_limit
            learned = f"{requests}/{int(window_s * 1000)}"
        pause_ms = -1 if error.retry_after_s is None else math.ceil(error.retry_after_s * 1000)
        self._observe(
            keys=script_keys(connection.name),
            args=[
                pause_ms,
                learned,
                _LEARNED_TTL_S,
                _STRIKES_TTL_S,
                _MAX_PAUSE_MS,
                _FIRST_PAUSE_MS,
                random.random(),  # noqa: S311 - jitter, not security.
            ],
        )

    def limits(self, connection: Connection) -> list[RateLimit]:
        """Every limit the governor enforces: the configured one, then the one Halo stated.

        Both are enforced at once, each over its own window, so a stated limit can only ever
        lower the rate, and never lifts a lower limit an operator configured.
        """
        limits = [connection.rate_limit]
        learned = self._redis.get(rate_learned_key(connection.name))
        if learned:
            requests, window_ms = (int(part) for part in str(learned).split("/"))
            limits.append(RateLimit(requests, window_ms / 1000))
        return limits

    def effective_limit(self, connection: Connection) -> RateLimit:
        """The binding limit for reports: the enforced one with the lowest average rate."""
        return min(self.limits(connection), key=lambda limit: limit.requests / limit.window_s)


def _handle(member: str, pad_ms: int) -> str:
    """A grant's handle for `Governor.settle`: its entry in the log, and the shortest pad of
    the windows it was granted under."""
    return f"{member}@{pad_ms}"


def _pad_ms(limit: RateLimit) -> int:
    window_ms = int(limit.window_s * 1000)
    return max(math.floor(window_ms * _PAD_FRACTION), _MIN_PAD_MS)


def _span_ms(limit: RateLimit) -> int:
    """The padded window of `limit` in ms: how long an entry must stay in the log."""
    return int(limit.window_s * 1000) + _pad_ms(limit)
