"""Halo's REST API as the worker uses it: one request choke point, auth, reads, the update.

`HaloClients` lives once per process and owns the one `httpx.Client`; `HaloClient` is one job's
view of one connection and counts the requests that job made. Every request, token requests
included, passes through `HaloClient._send`, which checks the job's deadline, takes rate budget,
counts, and turns transport failures into retryable errors. Auth is done there too, rather than
in an `httpx.Auth` flow, so that a refresh-and-retry is counted and budgeted like any request.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import httpx

from worker.connections import Connection
from worker.errors import (
    HaloAuthFailed,
    HaloRateLimited,
    HaloUnavailable,
    HaloUnexpectedResponse,
    JobError,
    TicketNotFound,
    UnknownConnection,
)
from worker.halo.auth import AccessToken, TokenSource, token_from_answer
from worker.halo.cache import Cache, MemoryCache
from worker.halo.errors import (
    error_from_response,
    halo_could_not_answer,
    is_expired_token_answer,
    route_answers,
    summarize_body,
)
from worker.halo.lookups import LookupKind, as_int, unwrap_records
from worker.halo.route import ApiRoutes, no_api_error
from worker.halo.signing import CacheSigner
from worker.keys import lookup_key

log = logging.getLogger("halo.client")

Ticket = dict[str, Any]
_USER_AGENT: Final = "halo-update-worker/0.1"
_LOCAL_LOOKUP_S: Final = 10.0
# Halo's largest page (FACTS, Lookups: `page_size` up to 100); a list read asks for no more
# ids than one page holds, so a tenant that honours `ticketids` answers it in one request.
MAX_PAGE_SIZE: Final = 100
IDS_PER_READ: Final = MAX_PAGE_SIZE
_LOOKUP_PATHS: Final[dict[str, str]] = {
    "status": "/Status",
    "priority": "/Priority",
    "agent": "/Agent",
    "team": "/Team",
}
# A default `GET /api/Agent` leaves out the Unassigned agent and agents restricted to other
# organisations or departments; a rule may name either (FACTS, Lookups; docs/halo.md).
_AGENT_PARAMS: Final = {
    "includeenabled": "true",
    "includeunassigned": "true",
    "showall": "true",
}
# Halo's largest page (the OpenAPI document: "Maximum size: 100").
_PAGE_SIZE: Final = 100
# 5,000 agents: far beyond any MSP's staff, and a bound on requests should a tenant keep
# answering new pages forever.
_MAX_PAGES: Final = 50


class Budget(Protocol):
    """The shared rate governor's face towards the client."""

    def acquire(self, connection: Connection) -> str | None:
        """Take budget for one request; returns the grant's handle for `settle`.

        Raises:
            HaloRateLimited: no budget now; `retry_after_s` says when there will be.
        """
        ...

    def spend_prepaid(self, connection: Connection) -> str | None:
        """A request already paid for (a released batch's) is sent now; returns its handle."""
        ...

    def settle(self, connection: Connection, grant: str | None, elapsed_s: float) -> None:
        """The request of `grant` ended `elapsed_s` after its budget was asked for."""
        ...

    def observe_rate_limited(self, connection: Connection, error: HaloRateLimited) -> None:
        """Learn from a 429: pause the connection and lower its rate if Halo stated one."""
        ...


class Unmetered:
    """A `Budget` that never refuses: for tools and tests that run one job at a time."""

    def acquire(self, connection: Connection) -> str | None:
        del connection
        return None

    def spend_prepaid(self, connection: Connection) -> str | None:
        del connection
        return None

    def settle(self, connection: Connection, grant: str | None, elapsed_s: float) -> None:
        del connection, grant, elapsed_s

    def observe_rate_limited(self, connection: Connection, error: HaloRateLimited) -> None:
        del connection, error


@dataclass(frozen=True)
class SentRequest:
    """One request, as an observer (metrics) sees it: no URL, header or body."""

    connection: str
    method: str
    endpoint: str  # "token" (the token request) or "api"
    status: str  # the HTTP status code, or "timeout" / "error" when Halo gave no answer
    duration_s: float


@dataclass(frozen=True)
class ListRead:
    """A checked list read: the tickets found (by id, only those asked for), whether Halo
    answered only tickets asked for (`honoured`: it filtered on `ticketids`), and the page
    size it cut pages to when one was cut short (None: none was)."""

    tickets: dict[int, Ticket]
    honoured: bool
    page_cap: int | None


@dataclass(frozen=True)
class Posted:
    """A POST of several updates: the saved tickets Halo's answer holds, of those sent, and
    whether it answered `every` ticket sent and no other."""

    saved: dict[int, Ticket]
    every: bool


@dataclass(frozen=True)
class Timeouts:
    """Per-request limits in seconds; a job's deadline can shorten them further."""

    connect_s: float = 5.0
    read_s: float = 30.0
    lookup_ttl_s: float = 300.0
    token_refresh_margin_s: float = 120.0


class HaloClients:
    """The process's Halo access: one HTTP pool, one token source per connection."""

    def __init__(
        self,
        connections: Mapping[str, Connection],
        *,
        timeouts: Timeouts | None = None,
        cache: Cache | None = None,
        budget: Budget | None = None,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = 300,
    ) -> None:
        self.connections = dict(connections)
        self.timeouts = timeouts or Timeouts()
        self.cache: Cache = cache or MemoryCache()
        # A few seconds' copy of the shared lookup lists in this process, so that each job does
        # not read them from the shared cache again; a miss still refreshes from Halo.
        self.local = MemoryCache()
        self.budget: Budget = budget or Unmetered()
        # Whether each connection's url leads to Halo's API (see `worker.halo.route`).
        self.routes = ApiRoutes(self.cache)
        self._tokens = {
            name: TokenSource(
                connection, self.cache, refresh_margin_s=self.timeouts.token_refresh_margin_s
            )
            for name, connection in self.connections.items()
        }
        self._signers = {name: CacheSigner(c) for name, c in self.connections.items()}
        # Cache keys already reported as holding an entry that fails its check: logged once each.
        self._rejected: set[str] = set()
        # One client for every connection: httpx pools per host, and is safe across threads.
        self.http = httpx.Client(
            transport=transport,
            headers={"User-Agent": _USER_AGENT},
            timeout=httpx.Timeout(self.timeouts.read_s, connect=self.timeouts.connect_s),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=False,
        )
        # Per connection, a token Halo refused (401) although it had just been issued: a
        # permission problem, which another token would not cure. A job that meets a 401 with
        # it fails at once instead of asking for yet another token (no refresh loop).
        self.refused_tokens: dict[str, str] = {}
        # Called after every request sent (metrics); must be quick and thread-safe.
        self.on_request: Callable[[SentRequest], None] | None = None

    def signer(self, connection: Connection) -> CacheSigner:
        """The signer binding `connection`'s cached lookup lists to its secret."""
        return self._signers[connection.name]

    def shared(self, connection: Connection, key: str) -> str | None:
        """A lookup list from the shared cache, if present, signed under the connection's
        secret and not past its signed expiry; an entry that fails the check is as good as
        absent (and logged once per key)."""
        stored = self.cache.get(key)
        if stored is None:
            return None
        value = self.signer(connection).verify(key, stored, now_s=time.time())
        if value is None and key not in self._rejected:
            self._rejected.add(key)
            log.warning(
                "shared cache: a lookup list failed its signature check (or is past its signed "
                "expiry) and is fetched again "
                "(expected once after an upgrade or a secret rotation; otherwise something "
                "other than the workers wrote to Redis)",
                extra={"connection": connection.name, "cache_key": key},
            )
        return value

    def for_job(
        self, connection: str, *, deadline_s: float | None = None, prepaid: int = 0
    ) -> HaloClient:
        """A client for one job (or one batch of jobs).

        Args:
            connection: the job's connection name.
            deadline_s: `time.monotonic()` value after which the job sends nothing more.
            prepaid: requests whose budget was already granted (a released batch's).

        Raises:
            UnknownConnection: no connection of that name is configured.
        """
        try:
            conn = self.connections[connection]
        except KeyError:
            known = ", ".join(sorted(self.connections)) or "none"
            raise UnknownConnection(
                f"connection {connection!r} is not configured on the workers (configured: {known})",
                field="connection",
            ) from None
        return HaloClient(
            self, conn, self._tokens[connection], deadline_s=deadline_s, prepaid=prepaid
        )

    def close(self) -> None:
        """Close the HTTP pool."""
        self.http.close()


class HaloClient:
    """One job's requests to one Halo connection. Not shared between threads."""

    def __init__(
        self,
        clients: HaloClients,
        connection: Connection,
        tokens: TokenSource,
        *,
        deadline_s: float | None = None,
        prepaid: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connection = connection
        self.requests_made = 0
        self._prepaid = prepaid
        self._clients = clients
        self._tokens = tokens
        self._deadline_s = deadline_s
        self._clock = clock

    # -- tickets -----------------------------------------------------------------------------

    def get_ticket(self, ticket_id: int) -> Ticket:
        """Read one ticket, with its `*_name` labels and details.

        Raises:
            TicketNotFound: Halo answered 404, and its API is known to answer at the url.
            NoHaloApi: Halo's API does not answer at the connection's url (404s).
            HaloUnexpectedResponse: the answer is not that ticket.
        """
        what = f"GET /api/Tickets/{ticket_id}"
        self._require_api()
        response = self._call(
            "GET",
            f"/Tickets/{ticket_id}",
            params={"includedetails": "true", "nocache": "true"},
            not_found=lambda: self._on_404(
                lambda: TicketNotFound(
                    f"Halo has no ticket {ticket_id} on connection {self.connection.name!r}",
                    field="ticket_id",
                    http_status=404,
                )
            ),
        )
        ticket = _json(response, what)
        if not isinstance(ticket, dict) or _ticket_id(ticket) != ticket_id:
            raise HaloUnexpectedResponse(
                f"{what} answered another ticket or no ticket: {summarize_body(response.text)}",
                http_status=response.status_code,
            )
        self._clients.routes.answered(self.connection)
        return ticket

    def get_tickets(self, ticket_ids: Sequence[int]) -> ListRead:
        """Read several tickets with list reads of at most `IDS_PER_READ` ids, page by page,
        and check that Halo filtered on `ticketids`.

        A ticket absent from the answer is not proof that Halo has none: the caller confirms
        with `get_ticket`. List reads carry fewer columns than `get_ticket`: no `*_name`
        labels, and no `details` (Halo's document gives `GET /api/Tickets` no parameter to
        include them). A read whose answer holds a ticket not asked for (the tenant ignores
        `ticketids`) stops at that page: paging on would read the whole tenant.

        Raises:
            HaloUnavailable, HaloRateLimited, ...: as any request; a retryable error loses
                nothing, since nothing was written.
        """
        found: dict[int, Ticket] = {}
        honoured = True
        page_cap: int | None = None
        ids = list(dict.fromkeys(ticket_ids))
        for start in range(0, len(ids), IDS_PER_READ):
            chunk = ids[start : start + IDS_PER_READ]
            read = self._read_pages(chunk)
            found.update(read.tickets)
            honoured = honoured and read.honoured
            page_cap = read.page_cap if page_cap is None else page_cap
            if not read.honoured:
                break  # single reads are cheaper than list reads of a tenant that ignores ids
        return ListRead(found, honoured, page_cap)

    def _read_pages(self, chunk: Sequence[int]) -> ListRead:
        wanted = set(chunk)
        found: dict[int, Ticket] = {}
        page_cap: int | None = None
        what = "GET /api/Tickets?ticketids=..."
        self._require_api()
        # Each page holds at least one ticket, so `len(chunk)` pages cover every id asked for.
        for page_no in range(1, len(chunk) + 1):
            params = {
                "ticketids": ",".join(str(i) for i in chunk),
                "pageinate": "true",
                "page_size": str(MAX_PAGE_SIZE),
                "page_no": str(page_no),
            }
            response = self._call(
                "GET",
                "/Tickets",
                params=params,
                not_found=lambda: self._on_404(
                    lambda: HaloUnexpectedResponse(
                        f"Halo answered 404 to {what}, which this API never should",
                        http_status=404,
                    )
                ),
            )
            answered = _json(response, what)
            self._clients.routes.answered(self.connection)
            tickets = unwrap_records(answered, "tickets")
            count = as_int(answered.get("record_count")) if isinstance(answered, dict) else None
            answered_ids = {_ticket_id(ticket) for ticket in tickets}
            if not answered_ids <= wanted or (count is not None and count > len(chunk)):
                # Unrelated tickets: this tenant does not filter on `ticketids`.
                kept = {tid: t for t in tickets if (tid := _ticket_id(t)) in wanted and tid}
                return ListRead({**found, **kept}, honoured=False, page_cap=None)
            before = len(found)
            found.update({tid: t for t in tickets if (tid := _ticket_id(t)) is not None})
            total = count if count is not None else len(chunk)
            # A page that adds nothing ends it too: a tenant that ignores `page_no` answers
            # its first page again.
            if len(found) == before or len(found) >= total or found.keys() >= wanted:
                break
            if len(tickets) < MAX_PAGE_SIZE:
                # More are due but the page was cut short: the tenant's own page size.
                page_cap = len(tickets) if page_cap is None else min(page_cap, len(tickets))
        return ListRead(found, honoured=True, page_cap=page_cap)

    def update_tickets(self, updates: Sequence[Mapping[str, Any]]) -> dict[int, Ticket]:
        """POST updates of existing tickets; returns the saved tickets by id.

        Every element must carry the positive `id` of a ticket known to exist: Halo creates a
        ticket for an element without one (FACTS, Update).

        Raises:
            ValueError: an element has no positive integer id (a bug, never sent).
            HaloUnexpectedResponse: the answer is for other ticket ids than those sent.
        """
        ids, posted = self._post(updates)
        if posted is None:
            # Some Halo builds answer 201 with no body: read back what was saved.
            return {tid: self.get_ticket(tid) for tid in ids}
        by_id, status = posted
        if set(by_id) != set(ids):
            raise HaloUnexpectedResponse(
                f"POST /api/Tickets for ticket(s) {sorted(ids)} was answered for "
                f"ticket(s) {sorted(str(i) for i in by_id)}: the update may have gone elsewhere",
                http_status=status,
            )
        return {tid: ticket for tid, ticket in by_id.items() if tid is not None}

    def post_updates(self, updates: Sequence[Mapping[str, Any]]) -> Posted:
        """POST updates of existing tickets and say which of them Halo's answer confirms.

        Unlike `update_tickets` an answer that lists fewer tickets than were sent (the first
        alone, none, or others) is not an error: the caller reads the unconfirmed tickets back
        and decides from what Halo holds. Never sends anything twice.

        Raises:
            ValueError: an element has no positive integer id (a bug, never sent).
            HaloRejected, HaloUnavailable, ...: as any request.
        """
        ids, posted = self._post(updates)
        if posted is None:
            return Posted({}, every=False)
        by_id, _ = posted
        saved = {tid: ticket for tid, ticket in by_id.items() if tid in ids and tid is not None}
        return Posted(saved, every=set(by_id) == set(ids))

    def _post(
        self, updates: Sequence[Mapping[str, Any]]
    ) -> tuple[list[int], tuple[dict[int | None, Ticket], int] | None]:
        """Send the POST; the ids sent, and the answered tickets by id with the status (None
        when the answer had no body)."""
        ids = [_ticket_id(update) for update in updates]
        if not ids or any(tid is None or tid <= 0 for tid in ids):
            raise ValueError("every update must carry the positive id of an existing ticket")
        response = self._call("POST", "/Tickets", body=list(updates))
        sent = [tid for tid in ids if tid is not None]
        if not response.content.strip():
            return sent, None
        answered = _json(response, "POST /api/Tickets")
        saved = [answered] if isinstance(answered, dict) and "id" in answered else None
        by_id = {_ticket_id(t): t for t in (saved or unwrap_records(answered, "tickets"))}
        return sent, (by_id, response.status_code)

    # -- lookups -----------------------------------------------------------------------------

    def lookup(
        self,
        kind: LookupKind,
        *,
        sla_id: int | None = None,
        tickettype_id: int | None = None,
        fresh: bool = False,
    ) -> tuple[list[dict[str, Any]], bool]:
        """A lookup list (statuses, priorities of an SLA, agents, teams), cached per connection.

        Args:
            kind: which list.
            sla_id: the SLA whose priorities to list; None or 0 (a ticket with no SLA) lists
                every SLA's priorities.
            tickettype_id: for statuses, list only those this ticket type allows.
            fresh: skip the cache (after a name missed, before failing it).

        Returns:
            The records, and whether they came from the cache.
        """
        sla_id = sla_id or None  # 0: the ticket has no SLA, so every SLA's priorities
        key = lookup_key(self.connection.name, kind, sla_id, tickettype_id)
        params: dict[str, str] = {}
        if kind == "priority":
            # A ticket without an SLA lists every SLA's priorities; never send "slaid=None"
            # nor "slaid=0", which lists none.
            params = {"slaid": str(sla_id)} if sla_id else {}
        elif kind == "status" and tickettype_id is not None:
            params = {"tickettype_id": str(tickettype_id)}
        elif kind == "agent":
            params = dict(_AGENT_PARAMS)
        local = self._clients.local
        if not fresh and (cached := local.get(key) or self._clients.shared(self.connection, key)):
            local.set(key, cached, _LOCAL_LOOKUP_S)
            records: list[dict[str, Any]] = json.loads(cached)
            return records, True
        records = self._read_list(kind, params)
        self._clients.routes.answered(self.connection)
        encoded = json.dumps(records)
        ttl_s = self._clients.timeouts.lookup_ttl_s
        signer = self._clients.signer(self.connection)
        signed = signer.sign(key, encoded, expires_at_s=time.time() + ttl_s)
        self._clients.cache.set(key, signed, ttl_s)
        self._clients.local.set(key, encoded, _LOCAL_LOOKUP_S)
        return records, False

    # -- the route to Halo's API -------------------------------------------------------------

    def check_api_route(self) -> bool:
        """Whether Halo's API answers at the connection's url: `GET /api/Status`, which every
        tenant has, answers anything but 404 (a 403 too: the endpoint is there). The verdict is
        kept for the fleet.

        Raises:
            What any request raises (HaloUnavailable, HaloRateLimited, BudgetExhausted,
            HaloAuthFailed), and the error of any other answer that is not a success.
        """
        try:
            self._call("GET", "/Status")
        except JobError as exc:
            verdict = route_answers(exc)
            if verdict is None:
                raise
            answers = verdict
        else:
            answers = True
        self._clients.routes.record(self.connection, answers=answers)
        return answers

    def _require_api(self) -> None:
        """Fail at once, without a request, while the url is known not to lead to the API."""
        if self._clients.routes.verdict(self.connection) is False:
            raise no_api_error(self.connection)

    def _on_404(self, otherwise: Callable[[], JobError]) -> JobError:
        """What a 404 on one of Halo's own endpoints means: `otherwise` where the API is known
        to answer at the url (checking it once if that is not known), else a wrong url."""
        routes = self._clients.routes
        with routes.checking(self.connection):
            answers = routes.verdict(self.connection)
            if answers is None:
                answers = self.check_api_route()
        return otherwise() if answers else no_api_error(self.connection)

    def cached_lookup(self, kind: LookupKind) -> list[dict[str, Any]] | None:
        """The whole list of a kind (every status, every SLA's priorities) if a cache holds it,
        without any request; None otherwise."""
        key = lookup_key(self.connection.name, kind)  # priorities: every SLA's (sla_id None)
        cached = self._clients.local.get(key) or self._clients.shared(self.connection, key)
        if cached is None:
            return None
        records: list[dict[str, Any]] = json.loads(cached)
        return records

    def _read_list(self, kind: LookupKind, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """Read a whole lookup list; agents page by page (the only lookup Halo's document
        gives paging parameters), stopping safely when the tenant does not page."""
        path = _LOOKUP_PATHS[kind]
        what = f"GET /api{path}"
        if kind != "agent":
            return unwrap_records(_json(self._call("GET", path, params=params), what), kind)
        records: dict[Any, dict[str, Any]] = {}
        previous: list[Any] | None = None
        for page_no in range(1, _MAX_PAGES + 1):
            paging = {"pageinate": "true", "page_size": str(_PAGE_SIZE), "page_no": str(page_no)}
            answer = _json(self._call("GET", path, params={**params, **paging}), what)
            page = unwrap_records(answer, kind)
            ids = [record.get("id") for record in page]
            if ids == previous:
                break  # the same page again: the tenant ignores page_no
            previous = ids
            for record in page:
                records.setdefault(record.get("id"), record)
            count = answer.get("record_count") if isinstance(answer, dict) else None
            if isinstance(count, int) and not isinstance(count, bool):
                if not page or len(records) >= count:
                    break
            elif len(page) != _PAGE_SIZE:
                break  # a short page is the last; a longer one is the whole list, unpaged
        return list(records.values())

    # -- the choke point ---------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        not_found: Callable[[], Exception] | None = None,
    ) -> httpx.Response:
        """An authenticated API call; refreshes the token once when Halo says it expired."""
        what = f"{method} /api{path}"
        url = self.connection.api_url + path
        token = self._tokens.get(self._fetch_token)
        response = self._send(method, url, token, params, body)
        if is_expired_token_answer(response.status_code, response.text):
            refused = self._clients.refused_tokens
            if refused.get(self.connection.name) != token:
                token = self._tokens.refresh(self._fetch_token, stale=token)
                response = self._send(method, url, token, params, body)
            if is_expired_token_answer(response.status_code, response.text):
                refused[self.connection.name] = token
                raise HaloAuthFailed(
                    f"connection {self.connection.name!r}: Halo refused a freshly issued token "
                    f"on {what} ({response.status_code}), so this is a permission, not an "
                    f"expired token: the connection's scope {self.connection.scope!r} must "
                    f"include {_needed_scope(method, path)!r} (or 'all'), and the API "
                    "application's agent must be active and allowed to do this",
                    http_status=response.status_code,
                )
        if response.is_success:
            if self._clients.refused_tokens.get(self.connection.name) == token:
                # The permission was granted meanwhile: this token works after all.
                self._clients.refused_tokens.pop(self.connection.name, None)
            return response
        if response.status_code == 404 and not_found is not None:
            raise not_found()
        error = error_from_response(
            response.status_code, response.text, response.headers, what=what, now_s=time.time()
        )
        if isinstance(error, HaloRateLimited):
            self._clients.budget.observe_rate_limited(self.connection, error)
        raise error

    def _fetch_token(self) -> AccessToken:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.connection.client_id,
            "client_secret": self.connection.client_secret.get_secret_value(),
            "scope": self.connection.scope,
        }
        params = {"tenant": self.connection.tenant} if self.connection.tenant else None
        response = self._send("POST", self.connection.token_url, None, params, None, form=form)
        if halo_could_not_answer(response.status_code):
            raise error_from_response(
                response.status_code,
                response.text,
                response.headers,
                what="POST /auth/token",
                now_s=time.time(),
            )
        return token_from_answer(response, self.connection)

    def _send(
        self,
        method: str,
        url: str,
        token: str | None,
        params: Mapping[str, str] | None,
        body: Any,
        *,
        form: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one HTTP request: deadline, budget, count, and transport errors as retryable."""
        timeouts = self._clients.timeouts
        remaining_s = timeouts.read_s
        if self._deadline_s is not None:
            remaining_s = min(remaining_s, self._deadline_s - self._clock())
            if remaining_s <= 0:
                raise HaloUnavailable(
                    f"the job's deadline passed before {method} {_path(url)} could be sent"
                )
        budget = self._clients.budget
        asked_s = time.monotonic()
        if self._prepaid > 0:
            self._prepaid -= 1
            grant = budget.spend_prepaid(self.connection)
        else:
            grant = budget.acquire(self.connection)
        self.requests_made += 1
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        sent_s = time.monotonic()
        try:
            response = self._clients.http.request(
                method,
                url,
                params=params,
                json=body,
                data=form,
                headers=headers,
                timeout=httpx.Timeout(remaining_s, connect=min(timeouts.connect_s, remaining_s)),
            )
        except httpx.TimeoutException as exc:
            self._observe(method, token, "timeout", sent_s)
            budget.settle(self.connection, grant, time.monotonic() - asked_s)
            raise HaloUnavailable(
                f"Halo did not answer {method} {_path(url)} in time ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            self._observe(method, token, "error", sent_s)
            budget.settle(self.connection, grant, time.monotonic() - asked_s)
            raise HaloUnavailable(
                f"could not reach Halo for {method} {_path(url)} ({type(exc).__name__}: {exc})"
            ) from None
        self._observe(method, token, str(response.status_code), sent_s)
        # Halo counted the request somewhere between the grant and now: a late one must not
        # leave the governor's log before it leaves Halo's window (`worker.governor`).
        budget.settle(self.connection, grant, time.monotonic() - asked_s)
        return response

    def _observe(self, method: str, token: str | None, status: str, sent_s: float) -> None:
        if (hook := self._clients.on_request) is not None:
            endpoint = "api" if token else "token"
            duration_s = time.monotonic() - sent_s
            hook(SentRequest(self.connection.name, method, endpoint, status, duration_s))


def _json(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        # A 2xx whose body does not parse was cut short on the way (proxy, reset): the same
        # request may well succeed again, and re-sending a read or an update is harmless.
        raise HaloUnavailable(
            f"{what} answered {response.status_code} with a body that is not valid JSON "
            f"(truncated?): {summarize_body(response.text)}",
            http_status=response.status_code,
        ) from None


def _needed_scope(method: str, path: str) -> str:
    # Halo's API scopes (FACTS, Authentication): writing tickets needs edit:tickets; the reads
    # this worker makes (tickets and the lookup lists tickets use) need read:tickets.
    return "edit:tickets" if method == "POST" and path.startswith("/Tickets") else "read:tickets"


def _ticket_id(ticket: Mapping[str, Any]) -> int | None:
    return as_int(ticket.get("id"))


def _path(url: str) -> str:
    return httpx.URL(url).path
