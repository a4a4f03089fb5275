"""`FakeHalo`: a faithful fake Halo PSA, callable as an `httpx.MockTransport` handler.

One instance is one tenant: seed data, tokens, rate limit, injected faults and a request log.
The same instance serves unit tests (`httpx.MockTransport(fake)`), a server thread
(`serve_in_thread`) and the `halo-fake` command; `handle` is the common path.

Order of processing for a Halo request: connect-error fault, rate limit, fail fault, hang fault,
then the endpoint (`routes`). Control requests (`/_fake/...`, see `control`) skip all of that.

Thread-safe: one lock guards all state; latency and hangs are slept outside it, so hundreds of
requests can be in flight at once.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx

from worker.halo.fake import answers, control
from worker.halo.fake.auth import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, TokenStore
from worker.halo.fake.config import FakeConfig
from worker.halo.fake.faults import FaultKind, FaultPlan, make_fault
from worker.halo.fake.profiles import DEFAULT_PROFILE, profile_options
from worker.halo.fake.ratelimit import RateLimit, RollingWindow
from worker.halo.fake.requestlog import (
    CreatedTicket,
    DecodedBody,
    RecordedRequest,
    RequestLog,
    decode_body,
    normalise_path,
    redact,
)
from worker.halo.fake.routes import HaloApi, Routed
from worker.halo.fake.state import HaloState

# The limit hosted tenants report; what an injected 429 quotes when no limit is configured.
_HOSTED_LIMIT = RateLimit(300, 300.0)


@dataclass(frozen=True)
class Outcome:
    """What to do with one request.

    Attributes:
        response: the answer, or None to close the connection without answering.
        hang_s: seconds a server waits before answering (a hang fault).
        mock_error: in MockTransport mode, raise httpx.ConnectError ("connect") or
            httpx.ReadTimeout ("read_timeout") instead of answering.
    """

    response: httpx.Response | None
    hang_s: float = 0.0
    mock_error: Literal["connect", "read_timeout"] | None = None


class FakeHalo:
    """A fake Halo PSA tenant. See the module docstring, and `config.FakeConfig` for options."""

    def __init__(
        self,
        *,
        seed: str = "demo",
        profile: str = DEFAULT_PROFILE,
        clients: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] | None = None,
        **options: Any,
    ) -> None:
        """Create a tenant.

        Args:
            seed: "demo" or "empty" (see `seeds`).
            profile: the tenant to play (`profiles.PROFILES`); `options` override its options.
            clients: valid `client_id -> client_secret` pairs; default the demo pair
                ("demo-client", "demo-secret").
            clock: monotonic seconds, for token expiry, the rate limit and the request log.
            wall_clock: the current time for ticket timestamps (default: UTC now).
            **options: any `FakeConfig` field, e.g. `rate_limit="300/300s"`,
                `expired_token_status=400`, `tickets_have_team_id=False`,
                `update_answer_shape="wrapped"`, `wrapped_lookups=True`, `latency_s=0.3`.

        Raises:
            ValueError, TypeError: an unknown seed or option, or a value out of range.
        """
        self._lock = threading.RLock()
        self._seed = seed
        self._clients = dict(clients or {DEMO_CLIENT_ID: DEMO_CLIENT_SECRET})
        self._clock = clock
        self._wall_clock = wall_clock or (lambda: datetime.now(UTC))
        self._initial = FakeConfig().updated(**{**profile_options(profile), **options})
        self._faults = FaultPlan()
        self._tokens = TokenStore(self._clients, clock=self._clock)
        self._load()

    def _load(self) -> None:
        # Tokens survive a reset: a worker in another process keeps its cached token, so a
        # reset between tests does not change how many token requests a test sees.
        self.config = self._initial
        self._state = HaloState(
            self._seed,
            tickets_have_team_id=self.config.tickets_have_team_id,
            now=self._wall_clock,
            type_rules=self.config.ticket_type_rules,
            large_tenant=self.config.large_tenant,
        )
        self._state.forcereassign_required = self.config.forcereassign_required
        self._api = HaloApi(self._state, self._tokens, self._faults)
        self._faults.clear()
        self._window = self._new_window()
        self._log = RequestLog()

    def _new_window(self) -> RollingWindow | None:
        limit = self.config.rate_limit
        return None if limit is None else RollingWindow(limit, self._clock)

    def reset(self) -> None:
        """Restore the seed and the constructed configuration; clear faults, rate-limit window,
        request log and creations. Issued tokens stay valid. Idempotent."""
        with self._lock:
            self._load()

    def use_profile(self, profile: str, **options: Any) -> None:
        """Play another tenant from now on, as if constructed with `profile` and `options`:
        seed data, configuration, faults and log are reset; `reset` keeps this profile.

        Raises:
            ValueError, TypeError: an unknown profile or option, or a value out of range.
        """
        initial = FakeConfig().updated(**{**profile_options(profile), **options})
        with self._lock:
            self._initial = initial
            self._load()

    def configure(self, **options: Any) -> None:
        """Change options (any `FakeConfig` field) from now on; `reset` restores them.

        Raises:
            TypeError, ValueError: an unknown option or a value out of range.
        """
        with self._lock:
            self.config = self.config.updated(**options)
            self._state.tickets_have_team_id = self.config.tickets_have_team_id
            self._state.forcereassign_required = self.config.forcereassign_required
            if "rate_limit" in options:
                self._window = self._new_window()

    @property
    def latency_s(self) -> float:
        """Constant delay before every answer, seconds; setting it is `configure(latency_s=)`."""
        return self.config.latency_s

    @latency_s.setter
    def latency_s(self, seconds: float) -> None:
        self.configure(latency_s=seconds)

    # -- faults ----------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        body: str | None = None,
        *,
        path: str | None = None,
        method: str | None = None,
        retry_after: float | str | None = None,
        content_type: str | None = None,
    ) -> None:
        """Answer the next `n` matching requests with `status` and `body`, unprocessed.

        `body` None gives an HTML error page (the rate-limit text for 429); a body such as
        `'{"id": 47'` with status 200 simulates a truncated answer. `retry_after` (seconds or
        an HTTP date) adds a `Retry-After` header. `path` is a case-insensitive prefix.
        """
        fault = make_fault(
            FaultKind.FAIL, n, method=method, path=path, status=status, body=body,
            retry_after=retry_after, content_type=content_type,
        )  # fmt: skip
        with self._lock:
            self._faults.add(fault)

    def hang_next(
        self,
        n: int = 1,
        seconds: float = 5.0,
        *,
        path: str | None = None,
        method: str | None = None,
        applied: bool = False,
    ) -> None:
        """Make the next `n` matching requests time out on the client.

        Served over HTTP the answer waits `seconds` (then a 504 page, or the real answer when
        `applied`); in MockTransport mode httpx.ReadTimeout is raised at once. With `applied`
        the request is processed first, so an update that "timed out" has in fact been saved.
        """
        fault = make_fault(
            FaultKind.HANG, n, method=method, path=path, seconds=seconds, applied=applied
        )
        with self._lock:
            self._faults.add(fault)

    def connect_error_next(
        self, n: int = 1, *, path: str | None = None, method: str | None = None
    ) -> None:
        """Refuse the next `n` matching requests: httpx.ConnectError in MockTransport mode;
        served over HTTP the socket is closed without an answer (httpx.RemoteProtocolError)."""
        fault = make_fault(FaultKind.CONNECT_ERROR, n, method=method, path=path)
        with self._lock:
            self._faults.add(fault)

    def answer_for_other_id_next(self, n: int = 1) -> None:
        """Make the next `n` successful ticket POSTs answer with another ticket's id (the
        update itself is saved as asked)."""
        fault = make_fault(FaultKind.OTHER_ID, n, method="POST", path="/api/tickets")
        with self._lock:
            self._faults.add(fault)

    def expire_tokens(self) -> int:
        """Expire every token issued so far. Returns how many were live. Idempotent."""
        with self._lock:
            return self._tokens.expire_all()

    def clear_faults(self) -> None:
        """Drop every pending fault (latency is an option: `configure(latency_s=0)`)."""
        with self._lock:
            self._faults.clear()

    def pending_faults(self) -> list[dict[str, Any]]:
        """The faults not yet used up, as JSON-ready dicts."""
        with self._lock:
            return self._faults.pending()

    # -- data ------------------------------------------------------------------------------

    def add_ticket(self, **fields: Any) -> dict[str, Any]:
        """Store a ticket (test setup; not logged, not a creation). Returns the stored copy."""
        with self._lock:
            return self._state.add_ticket(fields)

    def ticket(self, ticket_id: int) -> dict[str, Any] | None:
        """The stored ticket (ids and stored fields, no labels), or None."""
        with self._lock:
            stored = self._state.tickets.get(ticket_id)
            return None if stored is None else copy.deepcopy(stored)

    def lookup(self, kind: str) -> list[dict[str, Any]]:
        """A copy of one lookup list (kinds: `state.LOOKUP_KINDS`)."""
        with self._lock:
            return copy.deepcopy(self._state.lookups[kind])

    def set_lookup(self, kind: str, records: Iterable[Mapping[str, Any]]) -> None:
        """Replace one lookup list, e.g. to rename a status between two calls.

        Raises:
            ValueError: unknown kind, or a record without `id` and `name`.
        """
        with self._lock:
            self._state.set_lookup(kind, records)

    # -- request log -----------------------------------------------------------------------

    def requests(self) -> list[RecordedRequest]:
        """Every Halo request so far, in order of arrival."""
        return self._log.requests()

    def requests_to(self, method: str, path_prefix: str = "/") -> list[RecordedRequest]:
        """The requests with this method whose path starts with `path_prefix` (any case)."""
        return self._log.requests_to(method, path_prefix)

    def posts(self) -> list[RecordedRequest]:
        """Every ticket POST (`POST /api/Tickets`)."""
        return self._log.posts()

    def created_tickets(self) -> list[CreatedTicket]:
        """Every ticket a POST created: a correct worker leaves this empty."""
        return self._log.created()

    # -- serving ---------------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        """Answer one request as an `httpx.MockTransport` handler.

        Raises:
            httpx.ConnectError: a connect_error fault.
            httpx.ReadTimeout: a hang fault (raised at once, without sleeping).
        """
        if self.config.mock_latency and self.config.latency_s > 0:
            time.sleep(self.config.latency_s)
        outcome = self.handle(request, served=False)
        if outcome.mock_error == "connect":
            raise httpx.ConnectError("fake Halo: connection refused (injected)", request=request)
        if outcome.mock_error == "read_timeout":
            raise httpx.ReadTimeout("fake Halo: read timed out (injected hang)", request=request)
        if outcome.response is None:
            raise httpx.RemoteProtocolError("fake Halo: no answer", request=request)
        return outcome.response

    def handle(self, request: httpx.Request, *, served: bool = True) -> Outcome:
        """Process one request (without latency) and say how to answer it.

        Args:
            request: the request, with its body read.
            served: True when a real server will answer (hangs sleep there; a connect error
                closes the socket); False in MockTransport mode (they raise instead).

        Returns:
            The outcome. Never raises for a bad request: Halo answers those.
        """
        path = normalise_path(request.url.path)
        if path == "/_fake" or path.startswith("/_fake/"):
            return Outcome(control.answer(self, request, path))
        method = request.method.upper()
        body = decode_body(request)
        with self._lock:
            outcome, routed = self._process(request, method, path, body)
            answered = outcome.response is not None and (served or outcome.mock_error is None)
            self._log.add(
                method=method,
                path=request.url.path,
                path_lower=path,
                query=dict(request.url.params.items()),
                json=body.json,
                text=body.text,
                form=redact(body.form),
                status=outcome.response.status_code if answered and outcome.response else None,
                time_s=self._clock(),
                fault=routed.fault,
                created=routed.created,
            )
        return outcome

    def _process(
        self, request: httpx.Request, method: str, path: str, body: DecodedBody
    ) -> tuple[Outcome, Routed]:
        if self._faults.take(FaultKind.CONNECT_ERROR, method, path) is not None:
            return Outcome(None, mock_error="connect"), Routed(None, fault="connect_error")
        if self._window is not None:
            retry_after_s = self._window.admit()
            if retry_after_s is not None:
                retry = self.config.rate_limit_retry_after
                headers = {"Retry-After": str(retry_after_s)} if retry else {}
                response = answers.text_answer(429, self._window.limit.message(), headers=headers)
                return Outcome(response), Routed(response, fault="rate_limited")
        fail = self._faults.take(FaultKind.FAIL, method, path)
        if fail is not None:
            limit = self.config.rate_limit or _HOSTED_LIMIT
            response = fail.response(rate_limit_message=limit.message())
            return Outcome(response), Routed(response, fault="fail")
        hang = self._faults.take(FaultKind.HANG, method, path)
        if hang is not None and not hang.applied:
            # Halo's gateway gives up on a request that takes too long (about 60 s in life).
            response = answers.html_answer(504, "The gateway did not receive a timely response.")
            outcome = Outcome(response, hang_s=hang.seconds, mock_error="read_timeout")
            return outcome, Routed(response, fault="hang")
        routed = self._api.answer(request, path, body, self.config)
        if hang is not None:
            routed.fault = "hang"
            return Outcome(routed.response, hang_s=hang.seconds, mock_error="read_timeout"), routed
        return Outcome(routed.response), routed
