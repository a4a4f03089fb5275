"""Halo misbehaving, fault by fault: each ends in the record the contract promises.

A real worker (threads pool, small timeouts: `tests.integration.conftest.TEST_SETTINGS`) runs every
job against the fake Halo served over HTTP. Each test injects one fault, runs one job through
the producer, and checks its record (outcome, code, attempts, retryable) and what the fake saw
(its request log). Retryable faults (timeouts, dropped connections, 429, 5xx, a body cut
short) are retried inside the job's budget of 4 runs; every other one fails at once.

The module prints a matrix, fault → outcome, code, attempts, at its end, and writes it to a
file under pytest's temporary directory (its path is printed too).
"""

# The integration fixtures are imported by name (this directory's conftest does not offer
# them), so every test parameter that asks for one "redefines" the import.
# ruff: noqa: F811

from __future__ import annotations

import contextlib
import itertools
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import pytest

from fakehalo import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, FakeHalo, RecordedRequest
from producers.jobs import Producer
from tests.harness.processes import WorkerProcess
from tests.integration.conftest import (  # noqa: F401 - fixtures, used by name
    _clean_slate,
    connections_file,
    env_for,
    fake,
    halo_url,
    producer,
    redis_client,
    redis_server,
)
from tests.integration.harness import Record, new_job, run_job

pytestmark = pytest.mark.usefixtures("worker")

TICKET: Final = "/api/tickets/4711"
TICKETS: Final = "/api/tickets"
# The worker's limits (TEST_SETTINGS): 4 runs per job, a 4 s deadline per run, 2 s per read.
MAX_ATTEMPTS: Final = 4
JOB_DEADLINE_S: Final = 4.0
READ_TIMEOUT_S: Final = 2.0
BACKOFF_CAP_S: Final = 0.5
# Environment variable holding the wrong secret of the `badcreds` connection.
WRONG_SECRET_ENV: Final = "HALO_BADCREDS_SECRET"
WRONG_SECRET: Final = "not-the-demo-secret"


# -- the matrix ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the fault matrix."""

    fault: str
    outcome: str
    code: str
    attempts: int
    retryable: str
    halo: str

    def cells(self) -> list[str]:
        return [self.fault, self.outcome, self.code, str(self.attempts), self.retryable, self.halo]


HEADER: Final = ["fault", "outcome", "code", "attempts", "retryable", "what Halo saw"]


def render_matrix(rows: list[Row]) -> str:
    """The rows as an aligned text table."""
    table = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


@pytest.fixture(scope="module")
def matrix(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Row]]:
    """Collects a row per fault; prints the matrix and its file's path when the module ends."""
    rows: list[Row] = []
    yield rows
    text = render_matrix(rows)
    path = tmp_path_factory.mktemp("halo-faults") / "fault-matrix.txt"
    path.write_text(text + "\n")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        # Teardown output is captured (and shown only on failure) unless capture is lifted.
        with capture.global_and_fixture_disabled():
            reporter.write_sep("-", "Halo fault matrix")
            for line in text.splitlines():
                reporter.write_line(line)
            reporter.write_line(f"(written to {path})")


def seen(requests: list[RecordedRequest]) -> str:
    """What the fake saw, compactly: ``token 200 · GET ticket 429 429 200 · POST 201``."""
    groups: list[tuple[str, list[str]]] = []
    for r in requests:
        if r.path_lower == "/auth/token":
            what = "token"
        elif r.path_lower.startswith("/api/tickets/"):
            what = f"{r.method} ticket"
        elif r.path_lower == TICKETS:
            what = f"{r.method} tickets"
        else:
            what = f"{r.method} {r.path_lower.removeprefix('/api/')}"
        status = "-" if r.status is None else str(r.status)
        status += "(hang)" if r.fault == "hang" else ""
        if groups and groups[-1][0] == what:
            groups[-1][1].append(status)
        else:
            groups.append((what, [status]))
    return " · ".join(f"{what} {' '.join(statuses)}" for what, statuses in groups) or "nothing"


@pytest.fixture
def expect(matrix: list[Row], fake: FakeHalo) -> Callable[..., Record]:
    """``expect(fault, record, outcome=, code=, attempts=, retryable=, since=, elsewhere=)``:
    asserts the record and adds the fault's row to the matrix. What the fake saw is read at
    that moment, from request number `since` on (the job's own requests, after any warm-up);
    `elsewhere` says the job's connection is not the fake."""

    def check(
        fault: str,
        record: Record,
        *,
        outcome: str,
        code: str | None,
        attempts: int,
        retryable: bool | None = None,
        since: int = 0,
        elsewhere: bool = False,
    ) -> Record:
        requests = fake.requests()[since:]
        error = record["error"]
        matrix.append(
            Row(
                fault,
                record["outcome"],
                error["code"] if error else "-",
                record["attempts"],
                "-" if error is None else str(error["retryable"]).lower(),
                seen(requests),
            )
        )
        assert record["outcome"] == outcome, record["error"]
        assert (error["code"] if error else None) == code, error
        assert record["attempts"] == attempts, (record["attempts"], seen(requests))
        if code is None:
            assert error is None
            assert record["disposition"] is None
            assert record["result"][0]["id"] > 0
        else:
            assert error["retryable"] is retryable
            assert error["message"], "an error message names what to fix"
            assert record["result"] is None
        if elsewhere:
            # The job's connection points away from the fake: it heard nothing.
            assert requests == [], seen(requests)
        else:
            # Every request the job made reached the fake, and nothing else did.
            assert record["halo_requests"] == len(requests), seen(requests)
        # Halo creates a ticket for an update without a known id: never.
        assert fake.created_tickets() == []
        return record

    return check


# -- the worker and its connections ----------------------------------------------------------


@pytest.fixture(scope="module")
def blackhole() -> Iterator[str]:
    """The URL of a port that accepts no connection: its listen backlog is full, so a connect
    waits until the client's connect timeout (a Halo behind a dead route)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    yield f"http://127.0.0.1:{port}"
    for sock in [*fillers, listener]:
        sock.close()


@pytest.fixture(scope="module")
def worker(
    env_for: Callable[..., dict[str, str]],
    halo_url: str,
    blackhole: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    """One worker for the module, with three connections: `acme` (the fake), `blackhole`
    (nothing answers) and `badcreds` (the fake, with a client secret Halo does not know)."""
    directory = tmp_path_factory.mktemp("halo-faults-worker")
    connections = directory / "connections.toml"
    connections.write_text(
        "".join(
            f"[connections.{name}]\n"
            f'url = "{url}"\n'
            "allow_insecure_http = true\n"  # the fake Halo serves plain http on loopback
            f'client_id = "{DEMO_CLIENT_ID}"\n'
            f'client_secret_env = "{secret_env}"\n'
            # As in the integration tests: a 2 s window, so that a 429 without Retry-After
            # (which pauses the connection until its oldest request leaves the window) costs
            # seconds, not Halo's 5 minutes.
            'rate_limit = "200/2s"\n\n'
            for name, url, secret_env in [
                ("acme", halo_url, "HALO_ACME_SECRET"),
                ("blackhole", blackhole, "HALO_ACME_SECRET"),
                ("badcreds", halo_url, WRONG_SECRET_ENV),
            ]
        )
    )
    env = env_for()
    env.update(
        {
            "HALO_CONNECTIONS_FILE": str(connections),
            "HALO_ACME_SECRET": DEMO_CLIENT_SECRET,
            WRONG_SECRET_ENV: WRONG_SECRET,
            "HALO_HEARTBEAT_FILE": str(directory / "heartbeat"),
        }
    )
    process = WorkerProcess(env, directory / "worker.log", name="halo-faults").start()
    yield process
    process.stop(timeout_s=15)


def ticket_reads(fake: FakeHalo) -> list[RecordedRequest]:
    """Every read of a ticket: alone, or in a list read."""
    return [r for r in fake.requests() if r.method == "GET" and r.path.lower().startswith(TICKETS)]


def statuses(requests: list[RecordedRequest]) -> list[int | None]:
    return [r.status for r in requests]


def gaps_s(requests: list[RecordedRequest]) -> list[float]:
    """Seconds between consecutive requests of a list."""
    return [b.time_s - a.time_s for a, b in itertools.pairwise(requests)]


def warm_up(producer: Producer) -> None:
    """Run a job that changes nothing, so the worker holds a token and the status list."""
    record = run_job(producer, new_job(status="New"))
    assert record["outcome"] == "succeeded", record["error"]


# -- rate limiting -----------------------------------------------------------------------------


def test_a_429_storm_with_retry_after_is_waited_out_and_then_succeeds(
    producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    # Every ticket read, alone or in a released batch's list read (see ticket_reads).
    fake.fail_next(3, 429, path=TICKETS, method="GET", retry_after=1)

    record = run_job(producer, new_job(status="Closed"))

    expect("429 x3, Retry-After: 1", record, outcome="succeeded", code=None, attempts=4)
    reads = ticket_reads(fake)
    assert statuses(reads) == [429, 429, 429, 200]
    # Retry-After is a floor: Halo heard nothing from the job before each second was up.
    assert all(gap >= 1.0 - 0.01 for gap in gaps_s(reads)), gaps_s(reads)
    assert statuses(fake.posts()) == [201]
    assert record["changed_fields"] == ["status_id"]


def test_a_429_storm_without_retry_after_backs_off_and_then_succeeds(
    producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    # Halo limits the tenant, not one path: a job parked behind the limit reads its ticket in
    # a released batch's list read, which the storm reaches too.
    fake.fail_next(3, 429, body="Too Many Requests", path=TICKETS, method="GET")

    record = run_job(producer, new_job(status="Closed"))

    expect("429 x3, no Retry-After", record, outcome="succeeded", code=None, attempts=4)
    assert statuses(ticket_reads(fake)) == [429, 429, 429, 200]
    assert statuses(fake.posts()) == [201]


def test_rate_limiting_past_the_retry_budget_fails_retryable_as_halo_rate_limited(
    producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    # Every ticket read, alone or in a released batch's list read (see ticket_reads).
    fake.fail_next(50, 429, path=TICKETS, method="GET", retry_after=0.2)

    record = run_job(producer, new_job(status="Closed", error_handling="bounce"))

    expect(
        "429 on every read",
        record,
        outcome="failed",
        code="halo_rate_limited",
        attempts=MAX_ATTEMPTS,
        retryable=True,
    )
    assert record["disposition"] == "bounce"
    assert record["error"]["http_status"] == 429
    assert statuses(ticket_reads(fake)) == [429] * MAX_ATTEMPTS
    assert fake.posts() == []


# -- server errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_burst_of_server_errors_is_retried_and_then_succeeds(
    status: int, producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    fake.fail_next(2, status, path=TICKET, method="GET")

    record = run_job(producer, new_job(status="Closed"))

    expect(f"{status} x2 on the read", record, outcome="succeeded", code=None, attempts=3)
    assert statuses(fake.requests_to("GET", TICKET)) == [status, status, 200]
    assert statuses(fake.posts()) == [201]


def test_a_server_error_on_the_update_is_retried_and_the_ticket_written_once(
    producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    fake.fail_next(1, 502, path=TICKETS, method="POST")

    record = run_job(producer, new_job(status="Closed"))

    expect("502 on the update", record, outcome="succeeded", code=None, attempts=2)
    assert statuses(fake.posts()) == [502, 201]
    assert record["result"][0]["status_name"] == "Closed"


def test_server_errors_past_the_retry_budget_fail_retryable_as_halo_unavailable(
    producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    fake.fail_next(50, 503, path=TICKET, method="GET")

    record = run_job(producer, new_job(status="Closed"))

    expect(
        "503 on every read",
        record,
        outcome="failed",
        code="halo_unavailable",
        attempts=MAX_ATTEMPTS,
        retryable=True,
    )
    assert record["error"]["http_status"] == 503
    assert statuses(fake.requests_to("GET", TICKET)) == [503] * MAX_ATTEMPTS
    assert fake.posts() == []


# -- timeouts and dropped connections ----------------------------------------------------------


def test_a_halo_that_never_accepts_a_connection_fails_retryable_after_the_budget(
    producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    started_s = time.monotonic()

    record = run_job(producer, new_job(connection="blackhole", status="Closed"))

    expect(
        "connect timeout, every run",
        record,
        outcome="failed",
        code="halo_unavailable",
        attempts=MAX_ATTEMPTS,
        retryable=True,
        elsewhere=True,
    )
    assert "ConnectTimeout" in record["error"]["message"]
    assert record["error"]["http_status"] is None
    # Each run gave up on its token request after the 1 s connect timeout, not the 2 s read.
    assert time.monotonic() - started_s < MAX_ATTEMPTS * (READ_TIMEOUT_S + BACKOFF_CAP_S)
    assert record["halo_requests"] == MAX_ATTEMPTS


def test_a_dropped_connection_is_retried_and_then_succeeds(
    producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    fake.connect_error_next(1, path=TICKET, method="GET")

    record = run_job(producer, new_job(status="Closed"))

    expect("connection dropped once", record, outcome="succeeded", code=None, attempts=2)
    assert statuses(fake.requests_to("GET", TICKET)) == [None, 200]


def test_a_read_timeout_is_retried_and_then_succeeds(
    producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    fake.hang_next(1, seconds=READ_TIMEOUT_S + 1, path=TICKET, method="GET")

    record = run_job(producer, new_job(status="Closed"))

    expect("read timeout once", record, outcome="succeeded", code=None, attempts=2)
    assert [r.fault for r in fake.requests_to("GET", TICKET)] == ["hang", None]
    assert statuses(fake.posts()) == [201]


def test_an_update_saved_but_answered_after_the_timeout_is_not_posted_again(
    producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    fake.hang_next(1, seconds=READ_TIMEOUT_S + 1, path=TICKETS, method="POST", applied=True)

    record = run_job(producer, new_job(status="Closed"))

    expect("update saved, answer late", record, outcome="succeeded", code=None, attempts=2)
    assert len(fake.posts()) == 1
    # The second run found the ticket Closed and reported what the first run changed.
    assert record["changed_fields"] == ["status_id"]


def test_answers_slower_than_the_job_deadline_end_the_run_at_its_deadline(
    producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    # Each answer comes in under the 2 s read timeout, but together they outlast the run's
    # 4 s deadline: the third request gets only what is left of it, not a full read timeout.
    answered_s = 1.7
    fake.hang_next(1, seconds=answered_s, path=TICKET, method="GET", applied=True)
    fake.hang_next(1, seconds=answered_s, path="/api/status", method="GET", applied=True)
    fake.hang_next(1, seconds=10.0, path=TICKETS, method="POST")

    record = run_job(producer, new_job(status="Closed"))

    expect("answers outlast the deadline", record, outcome="succeeded", code=None, attempts=2)
    first_read, second_read = fake.requests_to("GET", TICKET)
    run_s = second_read.time_s - first_read.time_s
    # Run 1 ended when its deadline did (plus at most one backoff before run 2): the POST was
    # cut after ~0.6 s, where a full read timeout would have taken it past 5.4 s.
    assert JOB_DEADLINE_S - 0.3 <= run_s <= JOB_DEADLINE_S + BACKOFF_CAP_S + 0.6, run_s
    hung_post, saved_post = fake.posts()
    assert hung_post.fault == "hang"
    assert saved_post.status == 201


# -- authentication and permissions ------------------------------------------------------------


@pytest.mark.parametrize("answer", [400, 401])
def test_an_expired_token_is_refreshed_once_and_the_job_succeeds(
    answer: int, producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    warm_up(producer)
    fake.reset()
    fake.configure(expired_token_status=answer)
    fake.expire_tokens()

    record = run_job(producer, new_job(status="Closed"))

    expect(f"token expired, answered {answer}", record, outcome="succeeded", code=None, attempts=1)
    refused, refreshed, *rest = fake.requests()
    assert (refused.path_lower, refused.status) == (TICKET, answer)
    assert (refreshed.path_lower, refreshed.status) == ("/auth/token", 200)
    assert [r.status for r in rest if r.path_lower == "/auth/token"] == []
    assert statuses(fake.requests_to("GET", TICKET)) == [answer, 200]
    assert statuses(fake.posts()) == [201]


def test_a_client_secret_halo_does_not_know_fails_at_once_as_halo_auth_failed(
    producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    record = run_job(producer, new_job(connection="badcreds", status="Closed"))

    expect(
        "invalid_client",
        record,
        outcome="failed",
        code="halo_auth_failed",
        attempts=1,
        retryable=False,
    )
    message = record["error"]["message"]
    assert "client_id" in message
    assert "secret" in message
    assert "invalid_client" in message or "invalid" in message.lower()
    assert WRONG_SECRET not in message
    assert statuses(fake.requests_to("POST", "/auth/token")) == [401]
    assert len(fake.requests()) == 1


def test_a_403_fails_at_once_as_halo_forbidden(
    producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    fake.fail_next(
        1,
        403,
        body="The API application's agent may not change the status of this ticket.",
        path=TICKETS,
        method="POST",
    )

    record = run_job(producer, new_job(status="Closed"))

    expect(
        "403 on the update",
        record,
        outcome="failed",
        code="halo_forbidden",
        attempts=1,
        retryable=False,
    )
    assert record["error"]["http_status"] == 403
    assert "may not change the status" in record["error"]["message"]
    assert statuses(fake.posts()) == [403]


# -- answers that break an invariant -----------------------------------------------------------


def test_an_update_answered_for_another_ticket_fails_as_an_unexpected_response(
    producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    fake.answer_for_other_id_next(1)

    record = run_job(producer, new_job(status="Closed"))

    expect(
        "update answered for another id",
        record,
        outcome="failed",
        code="halo_unexpected_response",
        attempts=1,
        retryable=False,
    )
    assert "4711" in record["error"]["message"]
    assert len(fake.posts()) == 1


def test_an_html_error_page_is_classified_by_its_status_and_retried(
    producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    fake.fail_next(1, 500, path=TICKET, method="GET")  # no body: the fake's IIS error page

    record = run_job(producer, new_job(status="Closed"))

    expect("HTML 500 page on the read", record, outcome="succeeded", code=None, attempts=2)
    assert statuses(fake.requests_to("GET", TICKET)) == [500, 200]


def test_an_html_page_answered_200_is_treated_as_a_cut_answer_and_retried(
    producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    page = "<!DOCTYPE html><html><body><h1>Sign in</h1><form>...</form></body></html>"
    fake.fail_next(1, 200, body=page, path=TICKET, method="GET")

    record = run_job(producer, new_job(status="Closed"))

    expect("HTML page answered 200", record, outcome="succeeded", code=None, attempts=2)
    assert statuses(fake.requests_to("GET", TICKET)) == [200, 200]


def test_an_html_rejection_of_the_update_fails_with_its_text_and_no_markup(
    producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    page = (
        "<html><head><title>Bad Request</title></head><body><h2>CODE:APP03/2 Please select "
        "the CAB members to approve</h2></body></html>"
    )
    fake.fail_next(1, 400, body=page, path=TICKETS, method="POST")

    record = run_job(producer, new_job(status="Closed"))

    expect(
        "HTML 400 page on the update",
        record,
        outcome="failed",
        code="halo_rejected",
        attempts=1,
        retryable=False,
    )
    message = record["error"]["message"]
    assert "CODE:APP03/2 Please select the CAB members to approve" in message
    assert "<" not in message


def test_a_truncated_json_answer_is_retried_and_then_succeeds(
    producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    fake.fail_next(
        1, 200, body='{"id": 4711, "summary": "Printer on 3rd fl', path=TICKET, method="GET"
    )

    record = run_job(producer, new_job(status="Closed"))

    expect("truncated JSON on the read", record, outcome="succeeded", code=None, attempts=2)
    assert statuses(fake.requests_to("GET", TICKET)) == [200, 200]


def test_truncated_json_on_every_update_fails_retryable_after_the_budget(
    producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    fake.fail_next(50, 201, body='[{"id": 4711, "status_id": 9, "summ', path=TICKETS, method="POST")

    record = run_job(producer, new_job(status="Closed"))

    expect(
        "truncated JSON on every update",
        record,
        outcome="failed",
        code="halo_unavailable",
        attempts=MAX_ATTEMPTS,
        retryable=True,
    )
    assert "not valid JSON" in record["error"]["message"]
    assert statuses(fake.posts()) == [201] * MAX_ATTEMPTS


# -- lookups that change -----------------------------------------------------------------------


def status_reads(fake: FakeHalo, since: int) -> list[RecordedRequest]:
    """The status list reads from request number `since` on."""
    return [r for r in fake.requests()[since:] if r.path_lower == "/api/status"]


def renamed(records: list[dict[str, Any]], old: str, new: str) -> list[dict[str, Any]]:
    return [{**r, "name": new} if r["name"] == old else r for r in records]


def test_a_status_renamed_after_the_list_was_cached_is_found_after_one_refresh(
    producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    warm_up(producer)  # caches the status list, with "Closed"
    fake.set_lookup("status", renamed(fake.lookup("status"), "Closed", "Done"))
    since = len(fake.requests())

    record = run_job(producer, new_job(ticket_id="4712", status="done"))

    expect(
        "status renamed while cached",
        record,
        outcome="succeeded",
        code=None,
        attempts=1,
        since=since,
    )
    # The cached list (in Redis, or for seconds in the worker) missed, so the job read it once
    # more, and found the name there.
    assert len(status_reads(fake, since)) == 1
    assert record["result"][0]["status_id"] == 9
    assert record["result"][0]["status_name"] == "Done"
    assert statuses(fake.posts()) == [201]


def test_a_name_in_neither_the_cached_nor_the_fresh_list_fails_after_one_refresh(
    producer: Producer, fake: FakeHalo, expect: Callable[..., Record]
) -> None:
    warm_up(producer)
    fake.set_lookup("status", renamed(fake.lookup("status"), "Closed", "Done"))
    since = len(fake.requests())

    record = run_job(producer, new_job(status="Finished"))

    expect(
        "status name unknown, even fresh",
        record,
        outcome="failed",
        code="lookup_not_found",
        attempts=1,
        retryable=False,
        since=since,
    )
    assert len(status_reads(fake, since)) == 1
    assert record["error"]["field"] == "status"
    # The message offers the names Halo has now.
    assert "Done" in record["error"]["message"]
    assert fake.posts() == []
