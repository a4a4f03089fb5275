"""Injected faults: the next N matching requests fail, hang, drop, or answer for another ticket.

A fault targets every Halo request, or only those whose method and (case-insensitive) path
prefix match. Faults are consumed in the order they were added; each consumes one of its `n`
uses per matching request, so faults on different paths can be queued side by side.

Not thread-safe on its own: `FakeHalo` holds its lock around every call.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from fakehalo import answers


class FaultKind(enum.Enum):
    """What an injected fault does."""

    FAIL = "fail"  # answer `status` with `body` instead of processing the request
    HANG = "hang"  # answer late (server) or raise httpx.ReadTimeout (MockTransport)
    CONNECT_ERROR = "connect_error"  # close without answering / raise httpx.ConnectError
    OTHER_ID = "answer_for_other_id"  # a ticket POST answers with a different ticket id


@dataclass
class Fault:
    """One queued fault.

    Attributes:
        kind: what it does.
        remaining: uses left.
        method: HTTP method to match (any when None), upper case.
        path: path prefix to match (any when None), lower case, e.g. "/api/tickets".
        status: FAIL: the status answered.
        body: FAIL: the body answered (None: a default for the status).
        retry_after: FAIL: a `Retry-After` header value, or None for no header.
        content_type: FAIL: the content type (None: guessed from the body).
        seconds: HANG: how long the server holds the answer.
        applied: HANG: whether the request is processed (state changed) before the hang.
    """

    kind: FaultKind
    remaining: int
    method: str | None = None
    path: str | None = None
    status: int = 503
    body: str | None = None
    retry_after: str | None = None
    content_type: str | None = None
    seconds: float = 0.0
    applied: bool = False

    def matches(self, method: str, path: str) -> bool:
        """Whether a request (method, lower-case path) is targeted by this fault."""
        if self.method is not None and self.method != method.upper():
            return False
        return self.path is None or path.startswith(self.path)

    def response(self, *, rate_limit_message: str) -> httpx.Response:
        """FAIL: the answer to give. A 429 without a body quotes `rate_limit_message`; other
        statuses without a body get an HTML error page."""
        body = self.body
        if body is None:
            body = rate_limit_message if self.status == 429 else answers.html_page(self.status)
        headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
        content_type = self.content_type or answers.guess_content_type(body)
        return answers.text_answer(self.status, body, content_type=content_type, headers=headers)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description, for `GET /_fake/faults`."""
        described = asdict(self)
        described["kind"] = self.kind.value
        return described


def make_fault(
    kind: FaultKind,
    n: int,
    *,
    method: str | None = None,
    path: str | None = None,
    **options: Any,
) -> Fault:
    """Build a fault, normalising its target.

    Raises:
        ValueError: `n` is not a positive integer, or a path does not start with "/".
        TypeError: an option this kind of fault does not have.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if path is not None and not path.startswith("/"):
        raise ValueError(f"path must start with '/', got {path!r}")
    if "retry_after" in options and options["retry_after"] is not None:
        options["retry_after"] = _retry_after_text(options["retry_after"])
    return Fault(
        kind=kind,
        remaining=n,
        method=method.upper() if method else None,
        path=path.lower().rstrip("/") if path else None,
        **options,
    )


def _retry_after_text(value: Any) -> str:
    # Seconds travel as an integer; anything else (an HTTP date) is sent as given.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class FaultPlan:
    """The queue of pending faults."""

    def __init__(self) -> None:
        """Start with no faults."""
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        """Queue a fault behind those already queued."""
        self._faults.append(fault)

    def take(self, kind: FaultKind, method: str, path: str) -> Fault | None:
        """Consume one use of the first pending fault of `kind` matching the request."""
        for fault in self._faults:
            if fault.kind is kind and fault.matches(method, path):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def pending(self) -> list[dict[str, Any]]:
        """Descriptions of the faults not yet used up."""
        return [fault.describe() for fault in self._faults]

    def clear(self) -> None:
        """Drop every pending fault."""
        self._faults.clear()
