"""No secret and no email content leaks: not into Redis, logs, Flower or Sentry.

A representative run goes through a real worker, Flower and a stand-in Sentry, all on a
private Redis whose URL carries a password: jobs that succeed, fail, are retried, wait out a
429, are released from a backlog as a batch, refresh an expired token, are refused by the
producer, are published around it, go through the `halo-jobs` CLI (submit, result, preview,
doctor), and one is watched in flight through Flower (`inspect`). Every job carries two
markers in its variables: one its summary template renders (so Halo stores it, and the
record's `result` legitimately shows it), one no template reads.

Then every surface is scanned for the client secret, every access token the fake Halo issued,
the Redis and Flower passwords, and both markers:

- Redis, every key and value of every type (kombu message bodies decoded): none, except the
  rendered marker in a record (`halo:result:*`, the `halo:results` feed) and both markers in
  the payload a failed job keeps for `halo-jobs replay` (`halo:failed-job:*`, `job`), which
  lives no longer than its record. A record's `variables` is only the contract's
  ``{"custom": {result_variable: result}}``.
- The worker's, Flower's, the CLI's and this process's (the producer's) logs: none at all,
  the rendered marker included (logs never carry ticket text).
- Flower's API answers and Sentry's envelopes: none at all.

Then, apart from the run: a ``rediss://`` URL verifies certificates (kombu's broker default
does not), and no Redis password is written in the code.
"""

# The integration fixtures are imported by name (this directory's conftest does not offer
# them), so every test parameter that asks for one "redefines" the import.
# ruff: noqa: F811

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import logging
import re
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import redis
from celery import Celery

from fakehalo import FakeHalo, Outcome, serve_in_thread
from producers.jobs import Producer
from tests.harness.processes import BIN, FlowerProcess, RedisServer, WorkerProcess, service_env
from tests.integration.conftest import redis_client, redis_server  # noqa: F401 - fixtures
from tests.integration.harness import TEST_SETTINGS, wait_until
from worker.errors import InvalidJob
from worker.keys import RESULTS_STREAM
from worker.models import QUEUE, TASK_NAME
from worker.runtime import redis_client as worker_redis_client

REPO: Final = Path(__file__).resolve().parents[2]
SECRET_ENV: Final = "HALO_ACME_SECRET"
CLIENT_ID: Final = "security-client"
SECRET: Final = f"client-secret-{uuid.uuid4().hex}"
REDIS_PASSWORD: Final = f"redis-pw-{uuid.uuid4().hex}"
FLOWER_USER: Final = "ops"
FLOWER_PASSWORD: Final = f"flower-pw-{uuid.uuid4().hex}"
SENTRY_KEY: Final = f"sentrykey{uuid.uuid4().hex}"
# In every job's variables: the first is rendered into the summary, the second is read by
# no template.
REFERENCED: Final = f"REFERENCED-{uuid.uuid4().hex}"
UNREFERENCED: Final = f"UNREFERENCED-{uuid.uuid4().hex}"
RECORD_WAIT_S: Final = 30.0


# -- the stand-ins: a fake Halo that remembers its tokens, and a Sentry sink -----------------


class TokenRecordingHalo(FakeHalo):
    """The fake Halo, remembering every access token it hands out."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.issued: list[str] = []

    def handle(self, request: httpx.Request, *, served: bool = True) -> Outcome:
        outcome = super().handle(request, served=served)
        answer = outcome.response
        token_request = request.url.path.lower().endswith("/auth/token")
        if token_request and answer is not None and answer.status_code == 200:
            self.issued.append(str(json.loads(answer.content)["access_token"]))
        return outcome


class SentrySink:
    """Stands in for Sentry: keeps the (decompressed) body of every envelope POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        lock = threading.Lock()
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                with lock:
                    bodies.append(raw)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://{SENTRY_KEY}@127.0.0.1:{self._server.server_address[1]}/1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self._lock = lock

    def everything(self) -> str:
        with self._lock:
            return b"\n".join(self.bodies).decode("utf-8", errors="replace")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Collector(logging.Handler):
    """Keeps every log line of this process (the producer's side) while installed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(f"{record.name}: {text} {record.__dict__}")


# -- the rig -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker_url(redis_server: RedisServer) -> str:
    """The private Redis, with a password in its URL (the default user takes any password)."""
    return f"redis://default:{REDIS_PASSWORD}@127.0.0.1:{redis_server.port}/0"


@pytest.fixture(scope="module")
def fake() -> TokenRecordingHalo:
    return TokenRecordingHalo(clients={CLIENT_ID: SECRET})


@pytest.fixture(scope="module")
def halo_url(fake: TokenRecordingHalo) -> Iterator[str]:
    server = serve_in_thread(fake)
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def sink() -> Iterator[SentrySink]:
    made = SentrySink()
    yield made
    made.close()


@pytest.fixture(scope="module")
def env(
    broker_url: str, halo_url: str, sink: SentrySink, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The environment of the worker, Flower and the CLI."""
    directory = tmp_path_factory.mktemp("security")
    connections = directory / "connections.toml"
    connections.write_text(
        "[connections.acme]\n"
        f'url = "{halo_url}"\n'
        "allow_insecure_http = true\n"  # the fake Halo serves plain http on loopback
        f'client_id = "{CLIENT_ID}"\n'
        f'client_secret_env = "{SECRET_ENV}"\n'
        'rate_limit = "200/2s"\n'
    )
    made = service_env(
        broker_url=broker_url,
        connections_file=connections,
        secrets={SECRET_ENV: SECRET},
        **TEST_SETTINGS,
    )
    made["SENTRY_DSN"] = sink.dsn
    made["HALO_HEARTBEAT_FILE"] = str(directory / "heartbeat")
    return made


@pytest.fixture(scope="module")
def worker(
    env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    logs = tmp_path_factory.mktemp("security-worker")
    process = WorkerProcess(env, logs / "worker.log", name="security").start()
    yield process
    process.stop(timeout_s=15)


@pytest.fixture(scope="module")
def flower(
    env: dict[str, str], worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FlowerProcess]:
    del worker  # started first, so Flower sees it from the start
    flower_env = {**env, "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}"}
    logs = tmp_path_factory.mktemp("security-flower")
    process = FlowerProcess(flower_env, logs / "flower.log").start()
    yield process
    process.stop(timeout_s=10)


def job(ticket_id: int = 4711, **fields: Any) -> dict[str, Any]:
    """A job whose variables carry both markers; its summary renders the first."""
    made: dict[str, Any] = {
        "job_id": f"sec-{uuid.uuid4().hex}",
        "connection": "acme",
        "ticket_id": "{{custom.ticket.id}}",
        "summary": "Escalated: {{custom.note}}",
        "details": "<p>See the customer's mail.</p>",
        "variables": {
            "custom": {"ticket": {"id": ticket_id}, "note": REFERENCED},
            "email": {"subject": "Printer", "body": f"Dear team, {UNREFERENCED}"},
        },
        "meta": {"rule_id": "r-17"},
    }
    made.update(fields)
    return made


@dataclass(frozen=True)
class CliRun:
    """One `halo-jobs` command and what it wrote."""

    command: str
    stdout: str
    stderr: str


@dataclass
class Run:
    """What the representative run did and what it left to scan."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    process_log: list[str] = field(default_factory=list)
    cli_runs: list[CliRun] = field(default_factory=list)
    flower_answers: list[str] = field(default_factory=list)
    refusal: str = ""


def cli(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "halo-jobs"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def run(
    env: dict[str, str],
    fake: TokenRecordingHalo,
    flower: FlowerProcess,
    redis_client: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Run]:
    """The representative run; the tests below scan what it left."""
    made = Run()
    collector = Collector()
    root = logging.getLogger()
    level = root.level
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    api = httpx.Client(base_url=flower.url, auth=(FLOWER_USER, FLOWER_PASSWORD), timeout=10)
    broker_url = env["HALO_BROKER_URL"]
    producer = Producer(broker_url=broker_url)
    raw = Celery("raw", broker=broker_url, set_as_current=False)
    raw.conf.update(task_serializer="json", accept_content=["json"])
    try:
        wait_until(lambda: bool(api.get("/api/workers").json()), 30, "Flower to see the worker")
        submitted: list[str] = []

        def submit(one: dict[str, Any]) -> str:
            submitted.append(producer.submit(one))
            return submitted[-1]

        def settle() -> None:
            for job_id in submitted:
                record = producer.wait(job_id, RECORD_WAIT_S)
                assert record is not None, f"no record for {job_id}"
                made.records[job_id] = record

        # Succeeds, with its result stored in a variable.
        submit(job(status="Closed", result_variable="myVariable"))
        # Retried twice, then succeeds; waits twice in halo:deferred.
        fake.fail_next(2, 503, path="/api/tickets/4712", method="GET")
        submit(job(4712, status="Closed"))
        # Waits out a 429 (the connection pauses for the fleet).
        fake.fail_next(1, 429, path="/api/tickets/4713", method="GET", retry_after=1)
        submit(job(4713, status="Closed"))
        settle()
        # Parked while the connection is paused, then released as one batch.
        redis_client.set("halo:rate:acme:pause", "1", px=1500)
        for ticket_id in (4714, 4715, 4716):
            submit(job(ticket_id, status="Closed"))
        settle()
        # Fails in every way a job can on its own account, and twice on Halo's.
        submit(job(summary="{{custom.nothing}}"))
        submit(job(status="Closd"))
        submit(job(999999))
        fake.fail_next(
            1, 403, body='{"message": "Access denied"}', path="/api/tickets", method="POST"
        )
        submit(job(4712, status="In Progress"))
        echo = f"Cannot save summary 'Escalated: {REFERENCED}': the ticket is closed"
        fake.fail_next(1, 400, body=echo, path="/api/tickets", method="POST")
        submit(job(4713, status="New"))
        settle()
        # An expired token, answered 400: refreshed once.
        fake.configure(expired_token_status=400)
        fake.expire_tokens()
        submit(job(4711, status="In Progress"))
        settle()
        # A token answer that does not parse but holds a live token: the job fails, and the
        # token (remembered by the fake as issued) must show up on no surface scanned below.
        fake.expire_tokens()
        broken = {
            "access_token": f"t-{uuid.uuid4().hex}",
            "token_type": "Bearer",
            "expires_in": None,
        }
        fake.fail_next(1, 200, json.dumps(broken), path="/auth/token", method="POST")
        submit(job(4712, status="Closed"))
        settle()
        # Watched in flight through Flower, whose worker view runs `inspect`.
        fake.hang_next(1, seconds=2.0, path="/api/tickets/4714", method="GET", applied=True)
        in_flight = submit(job(4714, status="New"))
        time.sleep(0.5)
        for path in ("/api/workers?refresh=1", "/api/tasks", f"/api/task/info/{in_flight}"):
            made.flower_answers.append(api.get(path).text)
        settle()
        # Refused by the producer, then published around it: the worker refuses it too.
        bad = job(colour="red")
        try:
            producer.submit(bad)
        except InvalidJob as refused:
            made.refusal = refused.message
        # Sent without an argsrepr: the worker must hide the arguments from events itself.
        raw.send_task(TASK_NAME, args=[bad], task_id=bad["job_id"], queue=QUEUE)
        submitted.append(bad["job_id"])
        # The CLI: submit and wait, read a record, preview an update, check the connection.
        cli_job = job(4715, status="In Progress")
        for args, stdin in [
            (("submit", "-", "--wait", "30"), json.dumps(cli_job)),
            (("result", cli_job["job_id"]), None),
            (("preview", "-"), json.dumps(job(4716, status="Resolved"))),
            (("doctor", "acme", "--ticket", "4711"), None),
        ]:
            done = cli(env, *args, stdin=stdin)
            made.cli_runs.append(CliRun(args[0], done.stdout, done.stderr))
        submitted.append(cli_job["job_id"])
        settle()
        # Nothing left in flight: the queues, kombu's unacked messages, deferrals, backlogs.
        wait_until(lambda: quiet(redis_client), 30, "the queues and waiting lists to empty")
        for path in ["/api/workers?refresh=1", "/api/tasks", "/api/queues/length"] + [
            f"/api/task/info/{job_id}" for job_id in submitted
        ]:
            made.flower_answers.append(api.get(path).text)
        made.process_log = collector.lines
        yield made
    finally:
        root.removeHandler(collector)
        root.setLevel(level)
        api.close()
        producer.close()
        raw.close()


def quiet(client: redis.Redis) -> bool:
    waiting = [client.llen(QUEUE), client.llen("halo.batch"), client.hlen("unacked")]
    waiting += [client.zcard("halo:deferred"), client.scard("halo:backlogs")]
    return not any(waiting)


# -- scanning ------------------------------------------------------------------------------------


def secrets_of(fake: TokenRecordingHalo) -> dict[str, str]:
    """Every string that must appear nowhere: name → value."""
    assert fake.issued, "the fake issued no token: the scan would prove nothing"
    found = {f"access token #{n}": token for n, token in enumerate(fake.issued)}
    found.update(
        {
            "client secret": SECRET,
            "Redis password": REDIS_PASSWORD,
            "Flower password": FLOWER_PASSWORD,
            "Sentry key": SENTRY_KEY,
        }
    )
    return found


def hits(text: str, wanted: dict[str, str]) -> list[str]:
    return [name for name, value in wanted.items() if value in text]


def expand(raw: bytes) -> str:
    """A Redis value as text, with the base64 body of any kombu message in it decoded."""
    text = raw.decode("utf-8", errors="replace")
    decoded: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            properties = value.get("properties")
            body = value.get("body")
            encoding = properties.get("body_encoding") if isinstance(properties, dict) else None
            if encoding == "base64" and isinstance(body, str):
                decoded.append(base64.b64decode(body).decode("utf-8", errors="replace"))
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    with contextlib.suppress(ValueError):
        walk(json.loads(text))
    return "\n".join([text, *decoded])


@dataclass(frozen=True)
class Entry:
    """One piece of Redis: a key's name, or one value (or field/member) under it."""

    db: int
    key: str
    kind: str
    part: str  # "key", or the field / member / stream field the text came from
    text: str


def dump_redis(server: RedisServer) -> list[Entry]:
    """Every key and value of every database, whatever its type."""
    entries: list[Entry] = []
    info = redis.Redis(host="127.0.0.1", port=server.port).info("keyspace")
    for db_name in info:
        db = int(str(db_name).removeprefix("db"))
        client = redis.Redis(host="127.0.0.1", port=server.port, db=db)
        try:
            for raw_key in client.scan_iter(count=1000):
                key = raw_key.decode("utf-8", errors="replace")
                kind = as_text(client.type(raw_key))
                entries.append(Entry(db, key, kind, "key", key))
                for part, value in values_of(client, raw_key, kind):
                    entries.append(Entry(db, key, kind, part, expand(value)))
        finally:
            client.close()
    return entries


def values_of(client: redis.Redis, key: bytes, kind: str) -> list[tuple[str, bytes]]:
    """Every value under a key, each with the field, member or stream field it came from."""
    raw: Any
    found: list[tuple[str, Any]]
    if kind == "string":
        found = [("value", client.get(key))]
    elif kind == "hash":
        raw = client.hgetall(key)
        found = [(as_text(name), value) for name, value in raw.items()]
        found += [("field", name) for name in raw]
    elif kind == "list":
        found = [("item", value) for value in client.lrange(key, 0, -1)]
    elif kind == "set":
        found = [("member", value) for value in client.smembers(key)]
    elif kind == "zset":
        found = [("member", value) for value in client.zrange(key, 0, -1)]
    elif kind == "stream":
        raw = client.xrange(key)
        found = [(as_text(name), value) for _, fields in raw for name, value in fields.items()]
    else:
        found = [("a type this scan does not know", kind)]
    return [(part, as_bytes(value)) for part, value in found if value is not None]


def as_text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def marker_allowed(marker: str, entry: Entry) -> bool:
    """Where the contract (and the replay feature) let job text stay in Redis."""
    if entry.part != "key" and entry.key.startswith("halo:failed-job:") and entry.part == "job":
        return True  # a failed job kept for `halo-jobs replay`; see the test below
    if marker != REFERENCED:
        return False
    # The rendered summary, as Halo stored it, in a record: `result` (and its copy in
    # `variables`), or Halo's own words in `error.message`.
    in_record = entry.key.startswith("halo:result:") and entry.part == "value"
    in_feed = entry.key == RESULTS_STREAM and entry.part == "record"
    return in_record or in_feed


# -- the scans -----------------------------------------------------------------------------------


def test_redis_holds_no_secret_token_or_job_text_outside_the_records(
    run: Run, fake: TokenRecordingHalo, redis_server: RedisServer
) -> None:
    wanted = secrets_of(fake)
    entries = dump_redis(redis_server)
    assert entries, "Redis is empty: the scan would prove nothing"
    assert any(e.key.startswith("halo:result:") for e in entries)
    kinds = Counter(e.kind for e in entries if e.part == "key")
    print(f"scanned {sum(kinds.values())} keys ({dict(kinds)}), {len(entries)} keys and values")
    leaks = [
        f"{name} in db{e.db} {e.kind} {e.key!r} ({e.part})"
        for e in entries
        for name in hits(e.text, wanted)
    ]
    leaks += [
        f"{marker} in db{e.db} {e.kind} {e.key!r} ({e.part})"
        for e in entries
        for marker in (REFERENCED, UNREFERENCED)
        if marker in e.text and not marker_allowed(marker, e)
    ]
    assert leaks == []
    # The record of the job that succeeded shows the rendered marker: the scan could see it.
    assert any(REFERENCED in e.text for e in entries if e.key.startswith("halo:result:"))
    assert len(run.records) >= 15


def test_a_record_carries_variables_only_where_the_contract_puts_them(run: Run) -> None:
    outcomes = {r["outcome"] for r in run.records.values()}
    assert outcomes == {"succeeded", "failed"}
    codes = {r["error"]["code"] for r in run.records.values() if r["error"]}
    assert codes >= {
        "template_error",
        "lookup_not_found",
        "ticket_not_found",
        "halo_forbidden",
        "halo_rejected",
        "halo_unexpected_response",
        "invalid_job",
    }
    assert max(r["attempts"] for r in run.records.values()) >= 2, "no job was retried"
    for record in run.records.values():
        text = json.dumps(record)
        assert UNREFERENCED not in text, record["job_id"]
        if record["outcome"] == "succeeded":
            expected: dict[str, Any] = {}
            if record["variables"]:
                [name] = record["variables"]["custom"]
                expected = {"custom": {name: record["result"]}}
            assert record["variables"] == expected
            assert REFERENCED in record["result"][0]["summary"]
        else:
            assert record["variables"] == {}
            assert record["result"] is None
            # Only Halo's echo of the rendered summary may bring the marker into a failure.
            if REFERENCED in text:
                assert record["error"]["code"] == "halo_rejected"
                assert REFERENCED in record["error"]["message"]
    assert any(r["variables"] for r in run.records.values()), "no job set a result variable"


def test_a_failed_job_keeps_its_payload_for_replay_no_longer_than_its_record(
    run: Run, redis_client: redis.Redis
) -> None:
    # The one place job variables stay in Redis outside a record (`worker.records`): what
    # `halo-jobs replay` needs, kept for failed jobs only and expiring with the record.
    kept = list(redis_client.scan_iter(match="halo:failed-job:*"))
    assert kept, "no failed job kept for replay (did the replay feature change?)"
    for key in kept:
        job_id = key.removeprefix("halo:failed-job:")
        record = run.records.get(job_id)
        assert record is not None, key
        assert record["outcome"] == "failed", key
        record_ttl = redis_client.ttl(f"halo:result:{job_id}")
        assert 0 < redis_client.ttl(key) <= record_ttl
        if record["error"]["code"] == "invalid_job":
            assert not redis_client.hget(key, "job"), "an invalid job's payload is not kept"


def test_the_worker_flower_and_cli_logs_carry_no_secret_token_or_job_text(
    run: Run, fake: TokenRecordingHalo, worker: WorkerProcess, flower: FlowerProcess
) -> None:
    wanted = {**secrets_of(fake), "rendered marker": REFERENCED, "unread marker": UNREFERENCED}
    logs = {
        "worker log": worker.log_text(),
        "Flower log": flower.log_text(),
        **{f"stderr of halo-jobs {c.command}": c.stderr for c in run.cli_runs},
    }
    assert "job succeeded" in logs["worker log"], "the worker logged no outcome"
    assert "Task halo.update_batch[" in logs["worker log"], "no backlog batch ran"
    leaks = [
        f"{name} in the {where}" for where, text in logs.items() for name in hits(text, wanted)
    ]
    assert leaks == []


def test_the_cli_prints_job_text_only_in_records_and_previews_and_never_a_secret(
    run: Run, fake: TokenRecordingHalo
) -> None:
    wanted = {**secrets_of(fake), "unread marker": UNREFERENCED}
    submit, result, preview, doctor = run.cli_runs
    assert '"outcome": "succeeded"' in submit.stdout, submit.stderr
    assert REFERENCED in result.stdout  # the record's result: the summary Halo stored
    assert '"changed_fields"' in preview.stdout, preview.stderr
    assert "value not shown" in doctor.stdout, doctor.stdout + doctor.stderr
    for command in run.cli_runs:
        assert hits(command.stdout, wanted) == [], command.command
    assert REFERENCED not in doctor.stdout


def test_the_producers_log_carries_no_secret_token_or_job_text(
    run: Run, fake: TokenRecordingHalo
) -> None:
    wanted = {**secrets_of(fake), "rendered marker": REFERENCED, "unread marker": UNREFERENCED}
    assert run.process_log, "this process logged nothing: the scan would prove nothing"
    assert hits("\n".join(run.process_log), wanted) == []
    assert run.refusal.startswith("job.colour: unknown key")
    assert hits(run.refusal, wanted) == []


def test_flowers_api_answers_carry_no_secret_token_or_job_text(
    run: Run, fake: TokenRecordingHalo
) -> None:
    wanted = {**secrets_of(fake), "rendered marker": REFERENCED, "unread marker": UNREFERENCED}
    answers = "\n".join(run.flower_answers)
    assert "sec-" in answers, "Flower showed none of the jobs: the scan would prove nothing"
    assert hits(answers, wanted) == []


def test_sentry_envelopes_carry_no_secret_token_or_job_text(
    run: Run, fake: TokenRecordingHalo, sink: SentrySink
) -> None:
    wanted = {**secrets_of(fake), "rendered marker": REFERENCED, "unread marker": UNREFERENCED}
    # The DSN's public key identifies the project in every envelope's header, by design.
    del wanted["Sentry key"]
    wait_until(lambda: "halo_rejected" in sink.everything(), 20, "the Sentry events")
    sent = sink.everything()
    assert "halo_forbidden" in sent
    assert hits(sent, wanted) == []


def test_the_redis_scan_reads_kombu_message_bodies_and_allows_only_the_contracts_places() -> None:
    body = base64.b64encode(json.dumps([[{"variables": UNREFERENCED}], {}, {}]).encode()).decode()
    envelope = {"body": body, "properties": {"body_encoding": "base64"}, "headers": {}}
    unacked = json.dumps([envelope, "halo", "halo"]).encode()

    assert UNREFERENCED in expand(unacked)
    queued = Entry(0, "unacked", "hash", "tag", expand(unacked))
    assert not marker_allowed(UNREFERENCED, queued)
    assert not marker_allowed(REFERENCED, queued)
    record = Entry(0, "halo:result:j", "string", "value", REFERENCED)
    assert marker_allowed(REFERENCED, record)
    assert not marker_allowed(UNREFERENCED, record)


# -- TLS and passwords -----------------------------------------------------------------------


def test_a_rediss_broker_url_makes_the_worker_verify_the_brokers_certificate() -> None:
    probe = (
        "import json, ssl\n"
        "from worker.app import app\n"
        "conn = app.connection_for_write()\n"
        "print(json.dumps({'conf': app.conf.broker_use_ssl['ssl_cert_reqs'] == ssl.CERT_REQUIRED,"
        " 'connection': conn.ssl['ssl_cert_reqs'] == ssl.CERT_REQUIRED,"
        " 'transport': conn.transport_cls,"
        " 'dead_letters': type(conn.transport).__module__}))\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HALO_BROKER_URL": f"rediss://default:{REDIS_PASSWORD}@redis.example:6380/0",
    }
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "conf": True,
        "connection": True,
        "transport": "rediss",
        # kombu's Redis transport, checked: items that are no task message are dead-lettered.
        "dead_letters": "worker.transport",
    }
    # kombu warns "defaulting to insecure SSL behaviour" only when no SSL options are given.
    assert "insecure" not in done.stderr
    assert REDIS_PASSWORD not in done.stdout + done.stderr


def test_a_plain_redis_broker_url_sets_no_tls_options() -> None:
    probe = "from worker.app import app\nprint(app.conf.broker_use_ssl)\n"
    env = {"PATH": "/usr/bin:/bin", "HALO_BROKER_URL": "redis://127.0.0.1:6399/0"}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "None"


@pytest.mark.parametrize("scheme", ["rediss", "redis"])
def test_the_result_store_and_producers_verify_a_rediss_certificate(scheme: str) -> None:
    url = f"{scheme}://default:{REDIS_PASSWORD}@redis.example:6380/0"
    made = worker_redis_client(url)
    producer = Producer(broker_url=url)
    try:
        for client in (made, producer.redis):
            kwargs = client.connection_pool.connection_kwargs
            # The password comes from the URL, the one place configuration gives it.
            assert kwargs["password"] == REDIS_PASSWORD
            if scheme == "rediss":
                assert kwargs["ssl_cert_reqs"] == "required"
                assert kwargs.get("ssl_check_hostname", True) is True
            else:
                assert "ssl_cert_reqs" not in kwargs
        use_ssl = producer._celery.conf.broker_use_ssl  # the producer's Celery configuration
        if scheme == "rediss":
            assert use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        else:
            assert use_ssl is None
    finally:
        made.close()
        producer.close()


# A Redis URL with a password in it, or a password handed to a client, written down.
PASSWORD_IN_URL = re.compile(r"rediss?://[^\s/@\"'{}]*:(?P<password>[^\s/@\"'{}]+)@")
PASSWORD_ARGUMENT = re.compile(r"password\s*[=:]\s*[\"'](?P<password>[^\"']+)[\"']", re.IGNORECASE)
# What example configuration writes where the operator puts the real password.
PLACEHOLDER = re.compile(r"^(\*+|REPLACE_ME|<[^>]+>|\$\{?\w+\}?)$")


def written_passwords(text: str) -> list[str]:
    found = [m["password"] for p in (PASSWORD_IN_URL, PASSWORD_ARGUMENT) for m in p.finditer(text)]
    return [password for password in found if not PLACEHOLDER.match(password)]


def test_no_redis_password_is_written_in_the_code_or_the_deployment_files() -> None:
    patterns = ["worker/**/*.py", "producers/**/*.py", "ops/**/*.py", "ops/**/*.yaml"]
    patterns += ["bench/**/*.py", "tests/harness/**/*.py"]
    patterns += ["ops/**/*.toml", "ops/**/*.env", "ops/Dockerfile", "*.yml", "ops/env.example"]
    sources = [
        path
        for pattern in patterns
        for path in sorted(REPO.glob(pattern))
        if "fake" not in path.parts
    ]
    assert len(sources) > 20
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sources
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if written_passwords(line)
    ]
    assert found == []


def test_the_password_scan_finds_what_it_looks_for() -> None:
    assert written_passwords('url = "redis://:hunter2@redis:6379/0"') == ["hunter2"]
    assert written_passwords("redis.Redis(host='r', password='hunter2')") == ["hunter2"]
    assert written_passwords('HALO_BROKER_URL: "redis://:REPLACE_ME@redis:6379/0"') == []
    assert written_passwords("redis://:<password>@redis:6379/0") == []
    assert written_passwords("transport: redis://:**@127.0.0.1:6379/0") == []
