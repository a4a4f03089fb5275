"""What every HTTP answer Halo can give means: the error tree, retries, token refusals, routes."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from worker.errors import (
    BudgetExhausted,
    ErrorCode,
    HaloAuthFailed,
    HaloForbidden,
    HaloRateLimited,
    HaloRejected,
    HaloUnavailable,
    HaloUnexpectedResponse,
    JobError,
    NoHaloApi,
    PermanentError,
    RetryableError,
    TicketNotFound,
)
from worker.halo.errors import (
    MAX_DETAIL_CHARS,
    error_from_response,
    halo_could_not_answer,
    is_expired_token_answer,
    parse_retry_after,
    route_answers,
    summarize_body,
    token_refusal,
)
from worker.ratelimit import RateLimit

WHAT = "POST /api/Tickets"
HALO_429_TEXT = "Rate Limit Reached - 300 Requests per rolling 5 minute window"
NOW_S = 1_800_000_000.0


def classify(
    status: int, body: str = "", headers: dict[str, str] | None = None, now_s: float = NOW_S
) -> JobError:
    return error_from_response(status, body, httpx.Headers(headers or {}), what=WHAT, now_s=now_s)


# One row per status the worker can meet: (status, body, class, code, retryable).
TABLE: list[tuple[int, str, type[JobError], ErrorCode, bool]] = [
    (400, "CODE:APP03/2 Please select the CAB members to approve", HaloRejected,
     ErrorCode.HALO_REJECTED, False),
    (401, '{"error": "invalid_token"}', HaloAuthFailed, ErrorCode.HALO_AUTH_FAILED, False),
    (403, "Forbidden", HaloForbidden, ErrorCode.HALO_FORBIDDEN, False),
    (404, "<html>Not Found</html>", HaloUnexpectedResponse,
     ErrorCode.HALO_UNEXPECTED_RESPONSE, False),
    (405, "", HaloUnexpectedResponse, ErrorCode.HALO_UNEXPECTED_RESPONSE, False),
    (408, "Request Timeout", HaloUnavailable, ErrorCode.HALO_UNAVAILABLE, True),
    (409, "Conflict", HaloUnexpectedResponse, ErrorCode.HALO_UNEXPECTED_RESPONSE, False),
    (422, '{"message": "status not allowed"}', HaloRejected, ErrorCode.HALO_REJECTED, False),
    (429, HALO_429_TEXT, HaloRateLimited, ErrorCode.HALO_RATE_LIMITED, True),
    (500, "Internal Server Error", HaloUnavailable, ErrorCode.HALO_UNAVAILABLE, True),
    (502, "<html><title>502 Bad Gateway</title></html>", HaloUnavailable,
     ErrorCode.HALO_UNAVAILABLE, True),
    (503, "Service Unavailable", HaloUnavailable, ErrorCode.HALO_UNAVAILABLE, True),
    (504, "Gateway Time-out", HaloUnavailable, ErrorCode.HALO_UNAVAILABLE, True),
    (599, "", HaloUnavailable, ErrorCode.HALO_UNAVAILABLE, True),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body", "cls", "code", "retryable"), TABLE)
def test_every_status_maps_to_its_error(
    status: int, body: str, cls: type[JobError], code: ErrorCode, retryable: bool
) -> None:
    error = classify(status, body)
    assert type(error) is cls
    assert error.code is code
    assert error.retryable is retryable
    assert isinstance(error, RetryableError if retryable else PermanentError)
    assert error.http_status == status
    assert halo_could_not_answer(status) is retryable
    assert WHAT in error.message
    assert error.to_dict() == {
        "code": code.value,
        "message": error.message,
        "retryable": retryable,
        "http_status": status,
        "field": None,
    }


def test_a_rejection_carries_halos_message() -> None:
    error = classify(400, "CODE:APP03/2 Please select the CAB members to approve")
    assert error.message == (
        "Halo rejected POST /api/Tickets (400): CODE:APP03/2 Please select the CAB members to "
        "approve"
    )


def test_a_json_rejection_shows_its_message_field() -> None:
    error = classify(422, '{"message": "Status 9 is not allowed for this ticket type", "x": 1}')
    assert error.message.endswith(": Status 9 is not allowed for this ticket type")


def test_a_403_says_what_permission_may_be_missing() -> None:
    assert "lacks a permission" in classify(403, "").message


def test_a_401_says_what_to_check() -> None:
    assert "client_id and secret" in classify(401, "").message


def test_a_429_without_retry_after_leaves_the_wait_to_backoff() -> None:
    error = classify(429, "Too many requests")
    assert isinstance(error, HaloRateLimited)
    assert error.retry_after_s is None
    assert error.learned_limit is None


def test_a_429_with_delta_retry_after_is_honoured() -> None:
    error = classify(429, "", {"Retry-After": "17"})
    assert isinstance(error, HaloRateLimited)
    assert error.retry_after_s == 17.0


def test_a_429_with_an_http_date_retry_after_is_honoured() -> None:
    when = format_datetime(datetime.fromtimestamp(NOW_S + 42, tz=UTC), usegmt=True)
    error = classify(429, "", {"retry-after": when})
    assert isinstance(error, HaloRateLimited)
    assert error.retry_after_s == pytest.approx(42.0)


def test_a_429_learns_the_limit_from_halos_text() -> None:
    error = classify(429, HALO_429_TEXT)
    assert isinstance(error, HaloRateLimited)
    assert error.learned_limit == (300, 300.0)
    assert HALO_429_TEXT in error.message


def test_a_503_with_retry_after_is_honoured_too() -> None:
    error = classify(503, "", {"Retry-After": "5"})
    assert isinstance(error, HaloUnavailable)
    assert error.retry_after_s == 5.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("  12 ", 12.0),
        ("1.5", 1.5),
        ("-5", 0.0),  # already past: retry now, never wait a negative time
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past
    ],
)
def test_retry_after_parses_every_form(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now_s=NOW_S) == expected


def test_retry_after_as_a_date_counts_from_now() -> None:
    now_s = datetime(2015, 10, 21, 7, 27, 50, tzinfo=UTC).timestamp()
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now_s=now_s) == 10.0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (HALO_429_TEXT, (300, 300.0)),
        ("Rate Limit Reached - 700 Requests per rolling 5 minute window", (700, 300.0)),
        ("1 request per rolling 30 second window", (1, 30.0)),
        ("10000 requests per rolling 1 hour window", (10000, 3600.0)),
        ("0 Requests per rolling 5 minute window", None),
        ("300 Requests per rolling 0 minute window", None),
        ("Too many requests", None),
        ("", None),
    ],
)
def test_the_rate_limit_text_is_read(body: str, expected: tuple[int, float] | None) -> None:
    assert RateLimit.stated_by_halo(body) == expected


def test_halos_stated_limit_reads_as_the_connections_file_spells_it() -> None:
    stated = RateLimit.stated_by_halo(HALO_429_TEXT)
    assert stated == RateLimit.parse("300/5m") == RateLimit.parse("300/300s")
    assert str(stated) == "300/300s"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", "(empty body)"),
        ("   \n ", "(empty body)"),
        ("plain text", "plain text"),
        ("line one\n  line two", "line one line two"),
        ("<html><head><title>502 Bad Gateway</title></head><body></body></html>",
         "502 Bad Gateway"),
        ('{"error": "invalid_client", "error_description": "Bad client"}', "Bad client"),
        ('{"Message": "An error has occurred."}', "An error has occurred."),
        ('{"title": "Not Found", "status": 404}', "Not Found"),
        ('{"unrelated": 1}', '{"unrelated": 1}'),
        ('["a", "b"]', '["a", "b"]'),
        ("{not json", "{not json"),
    ],
)  # fmt: skip
def test_bodies_of_any_format_are_summarized(body: str, expected: str) -> None:
    assert summarize_body(body) == expected


@pytest.mark.parametrize(
    "body",
    ["", "<!DOCTYPE html><html><body><h1>Server Error</h1></body></html>", "not json", "{"],
)
@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 409, 422, 429, 500, 502, 503, 504])
def test_no_body_is_assumed_to_be_json(status: int, body: str) -> None:
    assert isinstance(classify(status, body), JobError)


def test_a_long_body_is_truncated() -> None:
    detail = summarize_body("x" * 10_000)
    assert len(detail) == MAX_DETAIL_CHARS
    assert detail.endswith("…")
    error = classify(500, "y" * 10_000)
    assert len(error.message) < MAX_DETAIL_CHARS + 100
    assert error.message.endswith("…")


def test_a_body_at_the_limit_is_kept_whole() -> None:
    assert summarize_body("z" * MAX_DETAIL_CHARS) == "z" * MAX_DETAIL_CHARS


@pytest.mark.parametrize(
    ("status", "body", "expired"),
    [
        (401, "", True),
        (401, '{"error": "invalid_token"}', True),
        (400, "The access token has expired", True),
        (400, '{"Message": "Authorization has been denied for this request."}', True),
        (400, "authorisation required", True),
        (400, "Token is invalid", True),
        (400, "CODE:APP03/2 Please select the CAB members to approve", False),
        (400, "", False),
        (403, "token lacks scope", False),
        (500, "token service down", False),
        (200, "token", False),
    ],
)
def test_an_expired_token_is_recognised_in_401_and_400(
    status: int, body: str, expired: bool
) -> None:
    assert is_expired_token_answer(status, body) is expired


# A token request's refused answer (neither a success nor "try again"): (status, body, meaning).
TOKEN_REFUSALS: list[tuple[int, str, str]] = [
    (400, '{"error": "invalid_client"}', "credentials"),
    (401, '{"error": "invalid_client"}', "credentials"),
    (403, "Forbidden", "credentials"),
    (400, '{"error": "invalid_scope"}', "scope"),
    (401, "invalid_scope: edit:tickets", "scope"),
    (403, '{"error": "invalid_scope"}', "scope"),
    (404, "<html>Not Found</html>", "endpoint"),
    (404, '{"error": "invalid_scope"}', "endpoint"),
    (405, "", "endpoint"),
    (301, "", "endpoint"),
    (302, "<a href='/login'>", "endpoint"),
    (422, "", "endpoint"),
]


@pytest.mark.parametrize(("status", "body", "meaning"), TOKEN_REFUSALS)
def test_every_refused_token_request_says_what_to_fix(status: int, body: str, meaning: str) -> None:
    assert token_refusal(status, body) == meaning


@pytest.mark.parametrize(
    ("status", "could_not"),
    [(200, False), (201, False), (301, False), (400, False), (401, False), (403, False),
     (404, False), (408, True), (409, False), (422, False), (429, True), (500, True),
     (502, True), (503, True), (504, True), (599, True)],
)  # fmt: skip
def test_only_timeouts_rate_limits_and_server_errors_are_tried_again(
    status: int, could_not: bool
) -> None:
    assert halo_could_not_answer(status) is could_not


# What a read of Halo's API says of the connection's url: (error raised, verdict).
ROUTE_VERDICTS: list[tuple[str, Exception | None, bool | None]] = [
    ("a success", None, True),
    ("a 403 of the API", classify(403), True),
    ("a 404 of the API", classify(404), False),
    ("a 404 already known", NoHaloApi("no API", http_status=404), False),
    ("a 404 of a ticket", TicketNotFound("no ticket", http_status=404), False),
    ("a 401 after a fresh token", classify(401), None),
    ("a token endpoint's 404", HaloAuthFailed("no token", http_status=404), None),
    ("a token endpoint's 403", HaloAuthFailed("refused", http_status=403), None),
    ("an unusable 200 token answer", HaloUnexpectedResponse("no token", http_status=200), None),
    ("a 400 of the API", classify(400), None),
    ("a 429", classify(429), None),
    ("a 500", classify(500), None),
    ("no answer", HaloUnavailable("timed out"), None),
    ("no budget", BudgetExhausted("no room", retry_after_s=1.0), None),
    ("not a job error", ValueError("bug"), None),
]


@pytest.mark.parametrize(
    ("error", "verdict"),
    [row[1:] for row in ROUTE_VERDICTS],
    ids=[row[0] for row in ROUTE_VERDICTS],
)
def test_only_the_apis_own_answers_say_whether_it_is_at_the_url(
    error: Exception | None, verdict: bool | None
) -> None:
    assert route_answers(error) is verdict
