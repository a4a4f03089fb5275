"""The doctor's Halo lines: token, API route, lookup lists, a ticket and its SLA's priorities.

`halo_checks` reads Halo through the worker's own `HaloClient`, each read timed by the
`operators.diagnosis.Watcher` under it, and yields one `Check` per line as each read ends; it
stops early where the rest could not succeed (no token, no API at the url, no ticket given).
It only reads: whether the application may write shows only when a job writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis

from operators.diagnosis import (
    Check,
    Exchange,
    Watcher,
    explain,
    quoted,
    route_missing,
    token_refused,
)
from worker.connections import Connection
from worker.errors import JobError
from worker.halo.client import HaloClient
from worker.halo.errors import halo_could_not_answer, route_answers, summarize_body
from worker.halo.lookups import LookupKind

# Scopes that allow a ticket update (FACTS, Authentication).
_UPDATE_SCOPES = frozenset({"all", "all:standard", "edit:tickets"})


def halo_checks(client: HaloClient, watcher: Watcher, ticket_id: int | None) -> Iterator[Check]:
    """The Halo lines of the report, in order, each yielded as soon as its read has ended."""
    # The first read fetches the token: the watcher tells the two requests apart.
    statuses = _timed(watcher, lambda: client.lookup("status"))
    token = next((e for e in watcher.exchanges if e.token_request), None)
    checked = _token_check(client.connection, token, statuses.error, watcher)
    yield checked
    if checked.status != "ok":
        yield Check("skip", "halo reads", "not tried without a token")
        return
    route = _route_check(client.connection, statuses, watcher)
    yield route
    if route.status == "FAIL":
        yield Check("skip", "halo reads", "not tried where Halo's API does not answer")
        return
    yield _lookup_check("statuses", "status", statuses, watcher)
    yield _lookup_check("agents", "agent", _timed(watcher, lambda: client.lookup("agent")), watcher)
    yield _lookup_check("teams", "team", _timed(watcher, lambda: client.lookup("team")), watcher)
    if ticket_id is None:
        yield Check("skip", "ticket", "give --ticket ID to read a ticket and its SLA")
        return
    read = _timed(watcher, lambda: client.get_ticket(ticket_id))
    ticket = read.result
    if read.error is not None or not isinstance(ticket, dict):
        yield _explain_read("ticket", "ticket", read.error, watcher)
        return
    sla_id = ticket.get("sla_id") if isinstance(ticket.get("sla_id"), int) else None
    detail = f"{ticket_id} read in {read.elapsed_ms:.0f} ms: SLA {sla_id}, status id "
    yield Check("ok", "ticket", detail + str(ticket.get("status_id")))
    priorities = _timed(watcher, lambda: client.lookup("priority", sla_id=sla_id))
    yield _lookup_check("priorities", "priority", priorities, watcher, f" for SLA {sla_id}")


def _token_check(
    connection: Connection,
    token: Exchange | None,
    error: Exception | None,
    watcher: Watcher,
) -> Check:
    if token is None and error is None:
        # Sent through a proxy mount from the environment, past the watcher.
        return Check("ok", "token", "issued (not timed: the request went through a proxy)")
    if token is None:
        # No token request went out: the fleet's budget had no room for it.
        return _explain_read("token", "token", error, None)
    if token.status is not None and halo_could_not_answer(token.status):
        # Halo could not answer now, as it could not answer any request now.
        return _explain_read("token", "token", error, watcher)
    if token.error is not None or token.status is None or token.status >= 300:
        return token_refused(connection, token)
    asked = connection.scope
    granted = token.scope
    shown = f"scope {quoted(granted)}" if granted else "no scope stated by Halo"
    if granted and granted != asked:
        shown += f" (asked {quoted(asked)})"
    detail = f"issued in {token.elapsed_ms:.0f} ms by {connection.token_url}, {shown}"
    if granted and not set(granted.split()) & _UPDATE_SCOPES:
        fix = (
            'an update needs scope "all" or "edit:tickets": allow it in the Halo API '
            "application and set scope on the connection"
        )
        return Check("FAIL", "token", detail, fix=fix)
    return Check("ok", "token", detail)


def _lookup_check(
    name: str, kind: LookupKind, read: _Read, watcher: Watcher, scope: str = ""
) -> Check:
    if read.error is not None or not isinstance(read.result, tuple):
        return _explain_read(name, kind, read.error, watcher)
    count = len(read.result[0])
    if count == 0:
        fix = f"a job naming a {kind} fails with lookup_not_found until Halo lists some"
        return Check("warn", name, f"Halo lists no {name}{scope}", fix=fix)
    return Check("ok", name, f"{count} read{scope} in {read.elapsed_ms:.0f} ms")


def _route_check(connection: Connection, statuses: _Read, watcher: Watcher) -> Check:
    """Whether Halo's API answers at the url, judged from the status list's read by the rule
    the workers use (`worker.halo.errors.route_answers`): a success or a 403 shows the
    endpoint is there. Only then can a 404 on a ticket mean "no such ticket"."""
    last = next((e for e in reversed(watcher.exchanges) if not e.token_request), None)
    answers = route_answers(statuses.error)
    if answers:
        answered = f"{last.status} in {last.elapsed_ms:.0f} ms" if last and last.status else "ok"
        detail = f"{connection.api_url} answers (GET /api/Status: {answered})"
        return Check("ok", "api route", detail)
    if answers is False:
        said = summarize_body(last.body_head) if last and last.body_head else None
        return route_missing(connection, said)
    return Check("skip", "api route", "not known: GET /api/Status did not answer (see statuses)")


@dataclass(frozen=True)
class _Read:
    """One read of Halo: its result or its error, and how long its API request took."""

    result: Any
    error: Exception | None
    elapsed_ms: float


def _timed(watcher: Watcher, call: Callable[[], Any]) -> _Read:
    before = len(watcher.exchanges)
    started_s = time.perf_counter()
    try:
        result, error = call(), None
    except (JobError, redis.RedisError) as exc:
        result, error = None, exc
    api = [e.elapsed_ms for e in watcher.exchanges[before:] if not e.token_request]
    return _Read(result, error, sum(api) if api else (time.perf_counter() - started_s) * 1000)


def _explain_read(name: str, what: str, error: Exception | None, watcher: Watcher | None) -> Check:
    last = watcher.exchanges[-1] if watcher and watcher.exchanges else None
    return explain(name, what, error, last)
