"""One job's session with one Halo connection: the one choke point every request passes.

`JobSession` is what `HaloClient` is built on (`worker.halo.client`); the ticket and lookup
list endpoints (`worker.halo.tickets`, `worker.halo.lists`) send through it. Every request,
token requests included, passes through `JobSession._send`, which checks the job's deadline,
takes rate budget (writing with the grant what must be durable before the request goes out:
a write journal's note, `JobSession.riding`), counts, reports the request to the process's
observer, and turns transport failures into retryable errors. Auth is done in
`JobSession._call` too, rather than in an `httpx.Auth` flow, so that a refresh-and-retry is
counted and budgeted like any request; what an answer that is not a success means is
`worker.halo.errors`'s to say. The session also keeps the route check: whether Halo's API
answers at the connection's url (`worker.halo.route`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import httpx

from worker.connections import Connection
from worker.errors import HaloAuthFailed, HaloRateLimited, HaloUnavailable, JobError
from worker.halo.auth import AccessToken, TokenSource, token_from_answer
from worker.halo.errors import (
    error_from_response,
    halo_could_not_answer,
    is_expired_token_answer,
    route_answers,
)
from worker.halo.route import no_api_error

if TYPE_CHECKING:
    from worker.halo.client import HaloClients, Rider

# Halo's largest page (FACTS, Lookups: `page_size` up to 100; the OpenAPI document: "Maximum
# size: 100"), for the list reads that page.
MAX_PAGE_SIZE: Final = 100


@dataclass(frozen=True)
class SentRequest:
    """One request, as an observer (metrics) sees it: no URL, header or body."""

    connection: str
    method: str
    endpoint: str  # "token" (the token request) or "api"
    status: str  # the HTTP status code, or "timeout" / "error" when Halo gave no answer
    duration_s: float


class JobSession:
    """One job's requests to one Halo connection, counted in `requests_made`. Not shared
    between threads."""

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
        self._riders: list[Rider] = []

    @contextmanager
    def riding(self, rider: Rider) -> Iterator[None]:
        """Within the block, `rider` is made durable before the next request goes out: in
        the same call as that request's budget grant when the budget can carry it
        (`Budget.acquire`), else alone just before. A request that never goes out (past the
        deadline, refused budget) drops it, and so does the end of the block when no request
        took it: nothing was sent that it had to be written for."""
        self._riders.append(rider)
        try:
            yield
        finally:
            self._riders = [r for r in self._riders if r is not rider]

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
        riders, self._riders = self._riders, []
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
            for rider in riders:
                rider.write()
            grant = budget.spend_prepaid(self.connection)
        else:
            grant = budget.acquire(self.connection, riders)
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
        except httpx.TransportError as exc:  # timeouts included
            timed_out = isinstance(exc, httpx.TimeoutException)
            self._observe(method, token, "timeout" if timed_out else "error", sent_s)
            budget.settle(self.connection, grant, time.monotonic() - asked_s)
            raise HaloUnavailable(
                f"Halo did not answer {method} {_path(url)} in time ({type(exc).__name__})"
                if timed_out
                else f"could not reach Halo for {method} {_path(url)} ({type(exc).__name__}: {exc})"
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


def _needed_scope(method: str, path: str) -> str:
    # Halo's API scopes (FACTS, Authentication): writing tickets needs edit:tickets; the reads
    # this worker makes (tickets and the lookup lists tickets use) need read:tickets.
    return "edit:tickets" if method == "POST" and path.startswith("/Tickets") else "read:tickets"


def _path(url: str) -> str:
    return httpx.URL(url).path
