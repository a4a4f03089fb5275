"""The record of every Halo request the fake received, for tests to assert on.

Control requests (`/_fake/...`) are never recorded. Secrets never are either: the token
request's `client_secret` is redacted and `Authorization` headers are not kept.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx

REDACTED = "[REDACTED]"
TICKETS_PATH = "/api/tickets"
_SECRET_FORM_KEYS = frozenset({"client_secret", "password"})


@dataclass(frozen=True)
class RecordedRequest:
    """One Halo request as the fake saw it, and what it answered.

    Attributes:
        seq: 1-based order of arrival.
        method: HTTP method, upper case.
        path: the path as sent (original case).
        path_lower: the path normalised (lower case, no trailing slash), as Halo routes it.
        query: query parameters as sent (last value wins for a repeated name).
        json: the decoded JSON body, or None when there was none or it was not JSON.
        text: the raw body when it was neither JSON nor a form, else None.
        form: the decoded form of a token request, secrets redacted, else None.
        status: the status answered; None when no answer was given (connect error, or a hang
            raised as a timeout in MockTransport mode).
        time_s: the fake's clock (monotonic seconds) at arrival.
        fault: the injected fault that shaped the answer ("fail", "hang", "connect_error",
            "answer_for_other_id", "rate_limited"), or None.
        created_ticket_ids: tickets this request created (a POST without a known id).
    """

    seq: int
    method: str
    path: str
    path_lower: str
    query: dict[str, str]
    json: Any
    text: str | None
    form: dict[str, str] | None
    status: int | None
    time_s: float
    fault: str | None = None
    created_ticket_ids: tuple[int, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, as `GET /_fake/requests` serves it."""
        record = asdict(self)
        record["created_ticket_ids"] = list(self.created_ticket_ids)
        return record


@dataclass(frozen=True)
class CreatedTicket:
    """A ticket created by a POST: the trap a worker must never fall into.

    Attributes:
        ticket_id: the id Halo gave the new ticket.
        requested_id: the `id` the POSTed element carried (None, 0, or an unknown id).
        fields: the ticket as stored.
        seq: `RecordedRequest.seq` of the POST.
    """

    ticket_id: int
    requested_id: Any
    fields: dict[str, Any]
    seq: int


class RequestLog:
    """The ordered record of Halo requests and the tickets they created. Thread-safe."""

    def __init__(self) -> None:
        """Start empty."""
        self._lock = threading.Lock()
        self._records: list[RecordedRequest] = []
        self._created: list[CreatedTicket] = []

    def add(self, *, created: list[tuple[int, Any, dict[str, Any]]], **fields: Any) -> None:
        """Record a request: `fields` are those of `RecordedRequest` but `seq`, and `created`
        lists (ticket id, requested id, stored ticket) for each ticket it created."""
        with self._lock:
            record = RecordedRequest(
                seq=len(self._records) + 1,
                created_ticket_ids=tuple(ticket_id for ticket_id, _, _ in created),
                **fields,
            )
            self._records.append(record)
            for ticket_id, requested_id, stored in created:
                self._created.append(CreatedTicket(ticket_id, requested_id, stored, record.seq))

    def requests(self) -> list[RecordedRequest]:
        """Every request, in order of arrival."""
        with self._lock:
            return list(self._records)

    def requests_to(self, method: str, path_prefix: str = "/") -> list[RecordedRequest]:
        """The requests with this method whose path starts with `path_prefix` (any case)."""
        prefix = normalise_path(path_prefix)
        return [
            r
            for r in self.requests()
            if r.method == method.upper() and (prefix == "/" or r.path_lower.startswith(prefix))
        ]

    def posts(self) -> list[RecordedRequest]:
        """Every ticket POST (`POST /api/Tickets`, not a sub-path)."""
        return [r for r in self.requests_to("POST", TICKETS_PATH) if r.path_lower == TICKETS_PATH]

    def created(self) -> list[CreatedTicket]:
        """Every ticket created by a POST, in order."""
        with self._lock:
            return list(self._created)


@dataclass(frozen=True)
class DecodedBody:
    """A request body decoded the ways Halo would read it."""

    json: Any = None
    form: dict[str, str] | None = None
    text: str | None = None
    is_json: bool = False


def decode_body(request: httpx.Request) -> DecodedBody:
    """Decode a request body as JSON, a form, or keep it as text. Never raises."""
    raw = request.content
    if not raw:
        return DecodedBody()
    text = raw.decode("utf-8", errors="replace")
    content_type = request.headers.get("content-type", "").lower()
    if "application/x-www-form-urlencoded" in content_type:
        return DecodedBody(form=dict(parse_qsl(text, keep_blank_values=True)))
    try:
        return DecodedBody(json=json.loads(text), is_json=True)
    except ValueError:
        return DecodedBody(text=text)


def redact(form: dict[str, str] | None) -> dict[str, str] | None:
    """A copy of a form with its secrets replaced by a marker."""
    if form is None:
        return None
    return {k: (REDACTED if k.lower() in _SECRET_FORM_KEYS else v) for k, v in form.items()}


def normalise_path(path: str) -> str:
    """Halo's routing key for a path: lower case, without a trailing slash."""
    return path.lower().rstrip("/") or "/"
