"""What the doctor saw of Halo, and what each way a read fails means an operator should fix.

`Watcher` wraps the real transport under the worker's `HaloClient` and notes each request's
time, the scope a token answer granted and the first words of a refusal; it keeps no token and
no successful body. `explain` turns a failed read into one report line: the likely cause (a 403
names what the application's agent may not read), Halo's own words, and the fix.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Literal

import httpx
import redis

from worker.connections import Connection
from worker.errors import (
    BudgetExhausted,
    HaloAuthFailed,
    HaloForbidden,
    HaloRateLimited,
    HaloUnavailable,
    TicketNotFound,
)
from worker.halo.errors import summarize_body

Status = Literal["ok", "FAIL", "warn", "skip"]
_INDENT = " " * 17
# What a 403 on each read means the application's agent may not read.
_READS: dict[str, str] = {
    "status": "ticket statuses",
    "agent": "agents",
    "team": "teams",
    "priority": "priorities and SLAs",
    "ticket": "this ticket (its client, site or team may be outside the agent's access)",
}


@dataclass(frozen=True)
class Check:
    """One line of the report, with Halo's own words and the fix when it failed."""

    status: Status
    name: str
    detail: str
    said: str | None = None
    fix: str | None = None

    def lines(self) -> list[str]:
        """The check as printed: a status line, then indented `Halo answered` and `fix`."""
        lines = [f"{self.status:<4} {self.name:<11} {self.detail}"]
        if self.said:
            lines.append(f"{_INDENT}Halo answered: {self.said}")
        if self.fix:
            lines.append(f"{_INDENT}fix: {self.fix}")
        return lines


@dataclass
class Exchange:
    """One HTTP request as the doctor saw it go by: never a token, never a successful body."""

    token_request: bool
    elapsed_ms: float
    status: int | None = None
    body_head: str = ""
    scope: str | None = None
    error: httpx.TransportError | None = None


class Watcher(httpx.BaseTransport):
    """Wraps the real transport to note timings, the scope granted and refusals."""

    def __init__(self, token_url: str) -> None:
        self._inner = httpx.HTTPTransport()
        self._token_path = httpx.URL(token_url).path
        self.exchanges: list[Exchange] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        token = request.method == "POST" and request.url.path == self._token_path
        started_s = time.perf_counter()
        try:
            response = self._inner.handle_request(request)
            response.read()
        except httpx.TransportError as exc:
            elapsed_ms = (time.perf_counter() - started_s) * 1000
            self.exchanges.append(Exchange(token, elapsed_ms, error=exc))
            raise
        seen = Exchange(token, (time.perf_counter() - started_s) * 1000, response.status_code)
        if not response.is_success:
            seen.body_head = response.text[:2000]
        elif token:
            seen.scope = granted_scope(response)
        self.exchanges.append(seen)
        return response

    def close(self) -> None:
        self._inner.close()


def explain(  # noqa: PLR0911 - a table of failures, one return each, read top down
    name: str, what: str, error: Exception | None, last: Exchange | None
) -> Check:
    """The FAIL line for a read of `what` that raised `error`; `last` is the last request."""
    said = summarize_body(last.body_head) if last and last.body_head else None
    status = getattr(error, "http_status", None)
    reads = _READS.get(what, what)
    if isinstance(error, BudgetExhausted):
        wait_s = error.retry_after_s or 0
        detail = (
            "not sent: the fleet's budget for this connection is used up, or paused "
            f"after a 429 (room again in {wait_s:.0f} s)"
        )
        return Check("FAIL", name, detail, fix="run the doctor again then")
    if isinstance(error, HaloRateLimited):
        fix = "wait for Halo's window to pass; the limit Halo stated shows under rate limit"
        return Check("FAIL", name, "429: Halo is rate limiting this tenant", said, fix)
    if isinstance(error, HaloForbidden):
        detail = f"403: the API application's agent lacks permission to read {reads}"
        fix = f"in Halo, give the API application's agent (or its role) access to {reads}"
        return Check("FAIL", name, detail, said, fix)
    if isinstance(error, TicketNotFound):
        fix = "check the ticket id, and that it is a ticket of this Halo"
        return Check("FAIL", name, "404: Halo has no ticket with this id", said, fix)
    if status == 404:
        fix = (
            "check url: it must be the Halo web address (https://<tenant>.halopsa.com) or the "
            "Resource Server URL from Halo's API settings (<web address>/api)"
        )
        return Check("FAIL", name, "404: Halo has no such API endpoint", said, fix)
    if isinstance(error, HaloAuthFailed):
        fix = "check that the API application's login agent is active and not restricted"
        return Check("FAIL", name, f"{status}: Halo refused a fresh token", said, fix)
    if isinstance(error, HaloUnavailable) and last is not None and last.error is not None:
        return transport_failure(name, last.error)
    if isinstance(error, HaloUnavailable):
        fix = "Halo itself is failing or overloaded: try again later"
        return Check("FAIL", name, f"{status or 'no answer'}: Halo is unavailable", said, fix)
    if isinstance(error, redis.RedisError):
        fix = "check that Redis stays reachable (HALO_RESULT_URL)"
        return Check("FAIL", name, f"the shared budget in Redis failed: {error}", fix=fix)
    return Check("FAIL", name, str(error) if error else "no answer", said)


def route_missing(connection: Connection, said: str | None) -> Check:
    """`GET /api/Status` answered 404: Halo's API is not at the connection's url."""
    detail = f"404: Halo's API is not at {connection.api_url} (GET /api/Status)"
    fix = (
        f"url is {connection.url}; set it to the Halo web address (https://<tenant>.halopsa.com) "
        "or the Resource Server URL from Halo's API settings (<web address>/api). Until then "
        "every job on this connection fails with halo_unexpected_response, naming the url"
    )
    return Check("FAIL", "api route", detail, said, fix)


def token_refused(connection: Connection, token: Exchange) -> Check:
    """A token request Halo refused, or that never reached it."""
    if token.error is not None:
        return transport_failure("token", token.error)
    said = summarize_body(token.body_head) if token.body_head else None
    if token.status not in (400, 401, 403):
        fix = (
            f"check url and auth_url (default {connection.url}/auth; Halo's API settings show "
            f"it as the Authorisation Server): {connection.token_url} is not Halo's token "
            "endpoint"
        )
        return Check("FAIL", "token", f"{token.status}: no token endpoint there", said, fix)
    if "invalid_scope" in token.body_head:
        scope = quoted(connection.scope)
        fix = f"allow scope {scope} in the Halo API application, or ask for one it has"
        return Check("FAIL", "token", f"{token.status} invalid_scope", said, fix)
    code = " invalid_client" if "invalid_client" in token.body_head else ""
    fix = (
        f"check client_id {quoted(connection.client_id)} and the secret; Halo issues a new "
        "client id when the API application is saved, and the secret must belong to that id"
    )
    return Check("FAIL", "token", f"{token.status}{code}: Halo refused the credentials", said, fix)


def transport_failure(name: str, error: httpx.TransportError) -> Check:
    text = f"{type(error).__name__}: {error}"
    if "SSL" in text or "CERTIFICATE" in text.upper():
        fix = (
            "check url (https and the tenant's exact host name) and that this host trusts "
            "Halo's certificate (a proxy that intercepts TLS needs its CA installed)"
        )
        return Check("FAIL", name, f"TLS failed: {text}", fix=fix)
    if isinstance(error, httpx.TimeoutException):
        fix = "check the network path to Halo (firewall, proxy); Halo may be slow"
        return Check("FAIL", name, f"no answer in time: {text}", fix=fix)
    fix = "check url (host name, port) and the network: DNS, firewall, proxy"
    return Check("FAIL", name, f"cannot reach Halo: {text}", fix=fix)


def granted_scope(response: httpx.Response) -> str | None:
    try:
        scope = response.json().get("scope")
    except (ValueError, AttributeError):
        return None
    return scope.strip() if isinstance(scope, str) and scope.strip() else None


def quoted(text: str) -> str:
    """Text in double quotes, as the report shows names and scopes."""
    return json.dumps(text, ensure_ascii=False)
