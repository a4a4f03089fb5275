"""The bodies Halo answers with: JSON, plain text, HTML error pages, .NET validation problems.

Halo has no documented error envelope, and its answers really do mix these shapes, so the fake
mixes them too: a client that assumes every error body is JSON must fail against it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import httpx

JSON_TYPE = "application/json; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"


def json_answer(
    status: int, data: Any, *, headers: Mapping[str, str] | None = None
) -> httpx.Response:
    """A JSON answer (compact, like Halo's)."""
    body = json.dumps(data, separators=(",", ":")).encode()
    return raw_answer(status, body, content_type=JSON_TYPE, headers=headers)


def text_answer(
    status: int,
    text: str,
    *,
    content_type: str = TEXT_TYPE,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """A plain-text (or other textual) answer."""
    return raw_answer(status, text.encode(), content_type=content_type, headers=headers)


def raw_answer(
    status: int, body: bytes, *, content_type: str, headers: Mapping[str, str] | None = None
) -> httpx.Response:
    """An answer with exactly these bytes; the content type is sent only when not empty."""
    all_headers = {"Content-Type": content_type} if content_type else {}
    all_headers.update(headers or {})
    return httpx.Response(status, content=body, headers=all_headers)


def html_page(status: int, detail: str = "") -> str:
    """An IIS-style HTML error page for `status`."""
    reason = _reason(status)
    text = html.escape(detail or reason)
    return (
        f"<!DOCTYPE html><html><head><title>{status} - {reason}</title></head>"
        f"<body><h1>Server Error</h1><h2>{status} - {reason}</h2><p>{text}</p></body></html>"
    )


def html_answer(status: int, detail: str = "") -> httpx.Response:
    """An HTML error page answer, e.g. Halo's 404 for an unknown ticket."""
    return text_answer(status, html_page(status, detail), content_type=HTML_TYPE)


def validation_problem(field: str, message: str) -> httpx.Response:
    """400 as ASP.NET Core answers a body that does not deserialise: the field is named."""
    return json_answer(
        400,
        {
            "type": "https://tools.ietf.org/html/rfc7231#section-6.5.1",
            "title": "One or more validation errors occurred.",
            "status": 400,
            "errors": {field: [message]},
        },
    )


def guess_content_type(body: str) -> str:
    """The content type a fault body most plausibly had: HTML, JSON or text."""
    start = body.lstrip()[:1]
    if start == "<":
        return HTML_TYPE
    if start in ("{", "["):
        return JSON_TYPE
    return TEXT_TYPE


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
