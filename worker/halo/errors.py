"""What each Halo HTTP answer means: the one mapping from status codes to errors and verdicts.

`error_from_response` turns an API answer into the error tree (see `worker.errors`), and
`answer_json` a success whose body does not parse; the other functions answer the questions
the client, the token request and `halo-jobs doctor` ask of a status: may it be tried again
(`halo_could_not_answer`), does it ask for a new token (`is_expired_token_answer`), what did a
refused token request mean (`token_refusal`), and does the API answer at the url at all
(`route_answers`). Halo documents no error envelope, so answers are classified by status code;
the body is kept, truncated, as detail and is never assumed to be JSON.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Final, Literal

import httpx

from worker.errors import (
    HaloAuthFailed,
    HaloForbidden,
    HaloRateLimited,
    HaloRejected,
    HaloUnavailable,
    HaloUnexpectedResponse,
    JobError,
)
from worker.ratelimit import RateLimit

# Enough of a Halo message to act on ("CODE:APP03/2 Please select the CAB members to approve")
# without copying a whole HTML error page into every record.
MAX_DETAIL_CHARS: Final = 300
_TOKEN_WORDS = re.compile(r"token|authori[sz]", re.IGNORECASE)


def error_from_response(
    status: int, body: str, headers: Mapping[str, str], *, what: str, now_s: float = 0.0
) -> JobError:
    """Classify a non-success Halo answer.

    Args:
        status: the HTTP status code (not 2xx).
        body: the answer's text, any format.
        headers: the answer's headers (for ``Retry-After``).
        what: the request, for messages, e.g. ``"POST /api/Tickets"``.
        now_s: current Unix time, to turn an HTTP-date ``Retry-After`` into seconds.

    Returns:
        The error to raise; retryable for 408, 429 and 5xx, permanent otherwise.
    """
    detail = summarize_body(body)
    if status == 429:
        return HaloRateLimited(
            f"Halo rate limit reached on {what}: {detail}",
            http_status=status,
            retry_after_s=parse_retry_after(headers.get("retry-after"), now_s=now_s),
            learned_limit=RateLimit.stated_by_halo(body),
        )
    if halo_could_not_answer(status):
        return HaloUnavailable(
            f"Halo answered {status} to {what}: {detail}",
            http_status=status,
            retry_after_s=parse_retry_after(headers.get("retry-after"), now_s=now_s),
        )
    if status == 401:
        return HaloAuthFailed(
            f"Halo refused the access token on {what} (401): check the connection's "
            f"client_id and secret and the API application's scopes: {detail}",
            http_status=status,
        )
    if status == 403:
        return HaloForbidden(
            f"Halo refused {what} (403): the API application or its login agent lacks a "
            "permission (e.g. editing closed tickets, changing status, reassigning outside "
            f"its teams): {detail}",
            http_status=status,
        )
    if status in (400, 422):
        return HaloRejected(f"Halo rejected {what} ({status}): {detail}", http_status=status)
    return HaloUnexpectedResponse(
        f"Halo answered {status} to {what}, which this API never should: {detail}",
        http_status=status,
    )


def answer_json(response: httpx.Response, what: str) -> Any:
    """The JSON of a successful answer to `what` (e.g. ``"GET /api/Status"``).

    Raises:
        HaloUnavailable: the body does not parse.
    """
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


def halo_could_not_answer(status: int) -> bool:
    """Whether a status says Halo could not answer now (408, 429, 5xx): the same request may
    succeed later, so the error is retryable. Any other refusal is Halo's answer."""
    return status in (408, 429) or status >= 500


TokenRefusal = Literal["scope", "credentials", "endpoint"]


def token_refusal(status: int, body: str) -> TokenRefusal:
    """What a token request's answer that is neither a success nor `halo_could_not_answer`
    means: ``"scope"`` (Halo refused the scope asked for), ``"credentials"`` (any other 400,
    401 or 403: the client id or secret), or ``"endpoint"`` (anything else: the request did not
    reach Halo's token endpoint, so the url or auth_url is wrong)."""
    if status not in (400, 401, 403):
        return "endpoint"
    return "scope" if "invalid_scope" in body else "credentials"


def route_answers(error: Exception | None) -> bool | None:
    """What a read of Halo's API, which raised `error` (None for a success), says about the
    connection's url: True when the API answers there (a success, or a 403: the endpoint is
    there, the agent may not read it), False when the API answered 404 (nothing there), None
    when the read says neither (Halo unavailable or rate limiting, no budget, or a failed
    token request, whose status is the token endpoint's, not the API's)."""
    if error is None or isinstance(error, HaloForbidden):
        return True
    if isinstance(error, HaloAuthFailed) or not isinstance(error, JobError):
        return None
    return False if error.http_status == 404 else None


def is_expired_token_answer(status: int, body: str) -> bool:
    """Whether an answer means "get a new token": 401, or a 400 that talks about the token.

    Halo sometimes answers an expired token with 400 instead of 401 (FACTS, Authentication).
    """
    return status == 401 or (status == 400 and bool(_TOKEN_WORDS.search(body[:2000])))


def parse_retry_after(value: str | None, *, now_s: float = 0.0) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now_s
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def summarize_body(body: str) -> str:
    """A short, single-line rendering of an answer body for error messages."""
    text = body.strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key in ("error_description", "Message", "message", "error", "title"):
            if isinstance(parsed.get(key), str) and parsed[key].strip():
                text = parsed[key].strip()
                break
    text = re.sub(r"<[^>]{0,200}>", " ", text) if text.startswith("<") else text
    text = " ".join(text.split())
    if not text:
        return "(empty body)"
    if len(text) > MAX_DETAIL_CHARS:
        return text[: MAX_DETAIL_CHARS - 1] + "…"
    return text
