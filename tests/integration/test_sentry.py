"""Sentry, end to end: a real worker with the real SDK reports to a local HTTP endpoint that
records every envelope it is sent.

A permanent failure an operator must act on is reported once, tagged; a job that was retried
and then succeeded is not reported; and nothing the worker sends carries the client secret, an
access token, job variables or ticket text.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from fakehalo import DEMO_CLIENT_SECRET, FakeHalo
from producers.jobs import Producer
from tests.harness.processes import RedisServer, WorkerProcess
from tests.integration.harness import new_job, run_job
from worker.models import QUEUE

# Long enough for the SDK's background thread to send an event; waited only when one is due.
EVENT_WAIT_S = 15.0


class SentrySink:
    """A stand-in for Sentry: records the body of every envelope POSTed to it, decompressed."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                with sink._lock:
                    sink.bodies.append(raw)
                    sink.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.port}/1"

    def events(self) -> list[dict[str, Any]]:
        """Every error event received so far."""
        with self._lock:
            bodies = list(self.bodies)
        return [
            json.loads(payload)
            for body in bodies
            for header, payload in envelope_items(body)
            if header.get("type") == "event"
        ]

    def events_for(self, job_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if (e.get("tags") or {}).get("job_id") == job_id]

    def wait_for_event(self, job_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + EVENT_WAIT_S
        while not (found := self.events_for(job_id)):
            assert time.monotonic() < deadline, f"no Sentry event for {job_id}"
            time.sleep(0.05)
        return found[0]

    def everything(self) -> bytes:
        """All bytes received, for scanning."""
        with self._lock:
            return b"\n".join(self.bodies)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def envelope_items(body: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """The (item header, payload) pairs of a Sentry envelope (newline-separated JSON)."""
    _, _, rest = body.partition(b"\n")
    items = []
    while rest.strip():
        line, _, rest = rest.partition(b"\n")
        header = json.loads(line)
        length = header.get("length")
        if length is None:
            payload, _, rest = rest.partition(b"\n")
        else:
            payload, rest = rest[:length], rest[length + 1 :]
        items.append((header, payload))
    return items


@pytest.fixture(scope="module")
def sink() -> Iterator[SentrySink]:
    server = SentrySink()
    yield server
    server.close()


@pytest.fixture(scope="module")
def sentry_worker(
    sink: SentrySink,
    env_for: Callable[..., dict[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    """A worker reporting to the sink through the contract's SENTRY_DSN variable."""
    env = env_for(sentry_environment="test")
    env["SENTRY_DSN"] = sink.dsn()
    logs = tmp_path_factory.mktemp("sentry")
    env["HALO_HEARTBEAT_FILE"] = str(logs / "heartbeat")
    process = WorkerProcess(env, logs / "worker.log", name="sentry")
    process.start()
    yield process
    process.stop(timeout_s=15)


pytestmark = pytest.mark.usefixtures("sentry_worker")


def job_with_text(marker: str, **fields: Any) -> dict[str, Any]:
    """A job whose variables, summary and details carry `marker`."""
    return new_job(
        ticket_id="{{custom.ticket.id}}",
        summary=f"SUMMARY-{marker} {{{{custom.note}}}}",
        details=f"<p>DETAILS-{marker}</p>",
        status="Closed",
        variables={"custom": {"ticket": {"id": 4711}, "note": f"VARIABLE-{marker}"}},
        meta={"message_id": f"<META-{marker}@mail>"},
        **fields,
    )


def issued_tokens(fake: FakeHalo) -> list[str]:
    """Every access token the fake has handed out (the fake offers no public view of them)."""
    return list(fake._tokens._tokens)  # test-only peek at the fake's state


def test_a_forbidden_update_is_reported_once_with_tags_and_no_job_text_or_secrets(
    producer: Producer, fake: FakeHalo, sink: SentrySink
) -> None:
    marker = uuid.uuid4().hex
    # Halo's answer quotes the ticket text, as real error pages may.
    answer = json.dumps({"message": f"cannot save SUMMARY-{marker}"})
    fake.fail_next(1, 403, answer, path="/api/tickets", method="POST")
    job = job_with_text(marker)

    record = run_job(producer, job)

    assert record["error"]["code"] == "halo_forbidden"
    event = sink.wait_for_event(job["job_id"])
    assert event["tags"]["connection"] == "acme"
    assert event["tags"]["code"] == "halo_forbidden"
    assert event["environment"] == "test"
    assert event["contexts"]["job"]["http_status"] == 403
    # Another failure after it, reported in turn, shows nothing more came for the first.
    barrier = new_job(ticket_id="4712", status="Closed")
    fake.fail_next(1, 403, path="/api/tickets", method="POST")
    run_job(producer, barrier)
    sink.wait_for_event(barrier["job_id"])
    assert len(sink.events_for(job["job_id"])) == 1
    sent = sink.everything()
    assert marker.encode() not in sent
    assert DEMO_CLIENT_SECRET.encode() not in sent
    tokens = issued_tokens(fake)
    assert tokens
    assert not [t for t in tokens if t.encode() in sent]
    assert all(path == "/api/1/envelope/" for path in sink.paths)


def test_a_job_retried_until_it_succeeds_is_not_reported(
    producer: Producer, fake: FakeHalo, sink: SentrySink
) -> None:
    marker = uuid.uuid4().hex
    fake.fail_next(2, 503, path="/api/tickets", method="GET")
    job = job_with_text(marker)

    record = run_job(producer, job)

    assert record["outcome"] == "succeeded"
    assert record["attempts"] == 3
    barrier = new_job(ticket_id="4712", status="Closed")
    fake.fail_next(1, 403, path="/api/tickets", method="POST")
    run_job(producer, barrier)
    sink.wait_for_event(barrier["job_id"])
    assert sink.events_for(job["job_id"]) == []
    everything = sink.everything()
    at = everything.find(job["job_id"].encode())
    assert at < 0, everything[max(0, at - 300) : at + 100]
    assert marker.encode() not in sink.everything()


def test_failures_that_are_the_rule_authors_to_fix_are_not_reported(
    producer: Producer, fake: FakeHalo, sink: SentrySink
) -> None:
    missing = run_job(producer, new_job(ticket_id="999999", status="Closed"))
    undefined = run_job(producer, new_job(ticket_id="{{custom.nothing}}"))
    unknown_status = run_job(producer, new_job(status="No Such Status"))

    codes = [r["error"]["code"] for r in (missing, undefined, unknown_status)]
    assert codes == ["ticket_not_found", "template_error", "lookup_not_found"]
    barrier = new_job(ticket_id="4712", status="Closed")
    fake.fail_next(1, 403, path="/api/tickets", method="POST")
    run_job(producer, barrier)
    sink.wait_for_event(barrier["job_id"])
    reported = {e["tags"].get("job_id") for e in sink.events()}
    assert not reported & {missing["job_id"], undefined["job_id"], unknown_status["job_id"]}


def test_the_worker_log_names_no_secret_either(sentry_worker: WorkerProcess) -> None:
    # The DSN's key is a credential of the Sentry project: it must not be logged.
    text = Path(sentry_worker.log_path).read_text()
    assert "publickey" not in text
    assert DEMO_CLIENT_SECRET not in text


def test_a_job_sent_under_an_unknown_task_name_is_reported_without_its_text(
    redis_server: RedisServer, sentry_worker: WorkerProcess, sink: SentrySink
) -> None:
    # Celery reports an unregistered task by quoting the whole task message, variables and
    # all, at ERROR: into the log, and so to Sentry.
    marker = uuid.uuid4().hex
    job = job_with_text(marker)
    task_name = f"halo.update_ticket_v{marker[:6]}"
    client = Celery("other-version", broker=redis_server.url, set_as_current=False)
    client.conf.update(task_serializer="json", accept_content=["json"])
    try:
        client.send_task(task_name, args=[job], task_id=job["job_id"], queue=QUEUE)
    finally:
        client.close()

    def reported() -> list[dict[str, Any]]:
        return [e for e in sink.events() if task_name in json.dumps(e.get("logentry"))]

    deadline = time.monotonic() + EVENT_WAIT_S
    while not reported():
        assert time.monotonic() < deadline, "no Sentry event for the unregistered task"
        time.sleep(0.05)
    [event] = reported()
    assert "unregistered task" in event["logentry"]["message"]
    assert marker.encode() not in sink.everything()
    log_text = sentry_worker.log_text()
    assert task_name in log_text, "the worker logged nothing about it: the scan proves nothing"
    assert marker not in log_text
