"""Queue items that are no task message: the worker runs on, and each one is kept, counted and
listed, and the ones that hold a job are replayed.

An ingestion system not written in Python may push anything onto the `halo` list. A real
worker (started as `celery -A worker.app worker`) on the private Redis takes them from the
queue, and `halo-jobs dead` is run as a user runs it.
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Final

import pytest
import redis
from kombu import Connection, Exchange, Queue
from prometheus_client.parser import text_string_to_metric_families

from fakehalo import FakeHalo
from producers.jobs import Producer
from tests.harness.processes import BIN, RedisServer, WorkerProcess, free_port
from tests.integration.harness import new_job, run_job, wait_for_record, wait_until
from worker.deadletters import MAX_DEAD_LETTERS, MAX_RAW_BYTES, Reason
from worker.keys import DEAD_LETTER_COUNTS, DEAD_LETTERS
from worker.models import QUEUE, TASK_NAME

# Email content a job carries in its variables: never shown by `halo-jobs dead`.
MARKER: Final = "EMAIL-BODY-7f3a"
# kombu's Redis transport keeps delivered, unacknowledged messages in this hash.
UNACKED: Final = "unacked"
JSON: Final = "application/json"
# Items are taken within milliseconds by an idle worker; this is only how long a failure waits.
TAKEN_WAIT_S: Final = 10.0


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def worker_settings(metrics_port: int, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The module worker's settings: metrics on a loopback port."""
    return {
        "metrics_port": str(metrics_port),
        "metrics_address": "127.0.0.1",
        "heartbeat_file": str(tmp_path_factory.mktemp("dead") / "heartbeat"),
    }


@pytest.fixture(scope="module")
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the private Redis that returns bytes, as the items are."""
    made = redis.Redis.from_url(redis_server.url)
    yield made
    made.close()


HaloJobs = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def halo_jobs(env_for: Callable[..., dict[str, str]]) -> HaloJobs:
    """Runs `halo-jobs ARGS...` against the test Redis."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "halo-jobs"), *args],
            capture_output=True,
            text=True,
            env=env_for(),
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    return run


def bare_job(**fields: Any) -> dict[str, Any]:
    """A valid job, with email content in its variables, as a foreign producer writes it."""
    job = {
        "connection": "acme",
        "ticket_id": "{{custom.ticket.id}}",
        "status": "Closed",
        "variables": {"custom": {"ticket": {"id": 4711}}, "email": {"body": MARKER}},
    }
    job.update(fields)
    return job


def strays() -> dict[str, tuple[bytes, str]]:
    """Items that are no kombu envelope, by name: (the bytes pushed, the reason expected)."""
    named_job = bare_job(job_id=f"raw-{uuid.uuid4()}")
    return {
        "truncated JSON": (json.dumps(bare_job()).encode()[:40], "not_json"),
        "bytes that are not UTF-8": (b"\x80\x81\xfe binary \xff", "not_utf8"),
        "plain text": (b"this is not a kombu envelope", "not_json"),
        "a foreign JSON object": (b'{"foo": 1}', "not_an_envelope"),
        "a JSON number": (b"42", "not_an_envelope"),
        "a bare job with a job id": (json.dumps(named_job).encode(), "not_an_envelope"),
        "a bare job without one": (json.dumps(bare_job()).encode(), "not_an_envelope"),
        "an envelope without delivery info": (
            json.dumps({"body": "", "properties": {"delivery_tag": "t"}}).encode(),
            "bad_envelope",
        ),
        "an envelope whose headers are a list": (
            json.dumps(envelope(headers=["task"])).encode(),
            "bad_envelope",
        ),
        "an envelope whose task name is a list": (
            json.dumps(envelope(headers={"task": ["halo.update_ticket"], "id": "x"})).encode(),
            "bad_envelope",
        ),
        "an envelope of an unknown body encoding": (
            json.dumps(envelope(body_encoding="rot13")).encode(),
            "bad_envelope",
        ),
        "an envelope whose body is not base64": (
            json.dumps(envelope(body="a")).encode(),
            "bad_envelope",
        ),
    }


def envelope(
    *, headers: Any = None, body_encoding: str = "base64", body: str | None = None
) -> dict[str, Any]:
    """A kombu envelope carrying a job, with one field made wrong by the caller."""
    return {
        "body": body or base64.b64encode(json.dumps([[bare_job()], {}, {}]).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers if headers is not None else {},
        "properties": {
            "delivery_tag": str(uuid.uuid4()),
            "body_encoding": body_encoding,
            "delivery_info": {"exchange": QUEUE, "routing_key": QUEUE},
        },
    }


def dead_letters(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(entry) for entry in client.lrange(DEAD_LETTERS, 0, -1)]


def raw_of(entry: dict[str, Any]) -> bytes:
    raw: str = entry["raw"]
    return base64.b64decode(raw) if entry["raw_encoding"] == "base64" else raw.encode()


def scraped_dead_letters(port: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "halo_dead_letters_total"
    }


def push_strays(client: redis.Redis) -> dict[str, tuple[bytes, str]]:
    """Push every stray onto the job queue, as an ingestion system would (LPUSH), and wait
    until the worker has taken them all."""
    items = strays()
    for item, _ in items.values():
        client.lpush(QUEUE, item)
    # Counted in the same transaction that keeps an item: once all are counted, all are kept.
    wait_until(lambda: counted(client) == len(items), TAKEN_WAIT_S, "the strays to be kept")
    assert client.llen(QUEUE) == 0
    return items


def counted(client: redis.Redis) -> int:
    """Items dead-lettered since the test began (the counts are cleared between tests)."""
    return sum(int(count) for count in client.hvals(DEAD_LETTER_COUNTS))


def test_a_stray_item_of_every_kind_is_dead_lettered_and_the_next_job_still_runs(
    worker: WorkerProcess,
    producer: Producer,
    client: redis.Redis,
    fake: FakeHalo,
    metrics_port: int,
) -> None:
    items = push_strays(client)

    record = run_job(producer, new_job(status="Closed"))

    assert record["outcome"] == "succeeded", record["error"]
    assert worker.running, "the worker died on a stray item"
    entries = dead_letters(client)
    assert len(entries) == len(items), entries
    by_raw = {raw_of(entry): entry for entry in entries}
    for name, (item, reason) in items.items():
        entry = by_raw.get(item)
        assert entry is not None, f"{name} left no dead letter"
        assert entry["reason"] == reason, (name, entry)
        assert entry["queue"] == QUEUE
        assert entry["dead_at"].endswith("Z")
        assert entry["detail"], name
        assert entry["size_bytes"] == len(item)
        assert not entry["truncated"]
    # Late acks: the good job's message leaves the unacked hash just after its record.
    wait_until(lambda: client.hlen(UNACKED) == 0, TAKEN_WAIT_S, "no message left unacked")
    expected: dict[str, float] = dict.fromkeys((reason.value for reason in Reason), 0)
    for _, reason in items.values():
        expected[reason] += 1
    assert scraped_dead_letters(metrics_port) == expected, "every reason counted, from 0"
    # The job in the last envelopes was never run: only the good job reached Halo.
    assert len(fake.posts()) == 1
    counted_by_reason = {reason: count for reason, count in expected.items() if count}
    print(f"\n{len(items)} strays dead-lettered, by reason {counted_by_reason}; next job ran")


def test_halo_jobs_dead_lists_strays_redacted_and_replays_the_ones_holding_a_job(
    worker: WorkerProcess,
    producer: Producer,
    client: redis.Redis,
    fake: FakeHalo,
    halo_jobs: HaloJobs,
) -> None:
    items = push_strays(client)
    named_id = json.loads(items["a bare job with a job id"][0])["job_id"]

    listed = halo_jobs("dead")
    print("\n" + listed.stdout)

    assert listed.returncode == 0, listed.stderr
    assert MARKER not in listed.stdout, "the listing shows a job's variables"
    for reason in ("not_json", "not_utf8", "not_an_envelope", "bad_envelope"):
        assert reason in listed.stdout
    assert named_id in listed.stdout, "a job is previewed by its ids"
    # The two bare jobs, and the two envelopes whose body holds a job but whose headers kombu
    # or Celery would crash on.
    assert f"{len(items)} dead letter(s), newest first, 4 holding a job" in listed.stdout
    shown = json.loads(halo_jobs("dead", "--json").stdout)
    assert {entry["id"] for entry in shown} == {entry["id"] for entry in dead_letters(client)}
    assert MARKER not in json.dumps(shown)

    refused = halo_jobs("dead", "--replay")

    assert refused.returncode == 2, "replay without --yes and no terminal must ask"
    assert len(dead_letters(client)) == len(items)

    named_entry = next(e for e in shown if named_id in e["preview"])
    one = halo_jobs("dead", "--replay", "--id", named_entry["id"][:8], "--yes")

    assert one.returncode == 0, one.stderr
    assert one.stdout.strip() == f"replayed {named_entry['id']} as job {named_id}"
    named = wait_for_record(producer, named_id, worker=worker)
    assert named["outcome"] == "succeeded", named["error"]

    replayed = halo_jobs("dead", "--replay", "--yes")

    assert replayed.returncode == 0, replayed.stderr
    assert "3 replayed, 0 not" in replayed.stderr
    assert named_id not in replayed.stdout, "a replayed entry left the list"
    unnamed_ids = [line.split(" as job ")[1] for line in replayed.stdout.splitlines()]
    assert len(unnamed_ids) == 3, replayed.stdout
    for job_id in unnamed_ids:
        assert job_id.startswith("dead-"), "a job without an id is named after its entry"
        unnamed = wait_for_record(producer, job_id, worker=worker)
        assert unnamed["outcome"] == "succeeded", unnamed["error"]
    # Each replayed job updates ticket 4711 at most once (jobs on one ticket may run side by
    # side, so each may find it open), and none creates a ticket.
    assert 1 <= len(fake.posts()) <= 4
    assert fake.created_tickets() == []
    left = dead_letters(client)
    assert len(left) == len(items) - 4, "replayed entries leave the list"
    assert halo_jobs("dead", "--replay", "--yes").stderr.strip().endswith("nothing to replay")
    assert worker.running


def test_the_list_is_bounded_and_a_large_item_is_kept_cut_and_listed_as_not_replayable(
    worker: WorkerProcess, client: redis.Redis, halo_jobs: HaloJobs
) -> None:
    big = json.dumps(bare_job(summary="x" * (MAX_RAW_BYTES + 1000))).encode()
    pipe = client.pipeline()
    for number in range(MAX_DEAD_LETTERS + 20):
        pipe.lpush(QUEUE, f"stray {number}".encode())
    pipe.lpush(QUEUE, big)
    pipe.execute()
    wait_until(
        lambda: counted(client) == MAX_DEAD_LETTERS + 21, 60, "the strays to be kept", worker=worker
    )
    assert client.llen(QUEUE) == 0

    entries = dead_letters(client)
    assert len(entries) == MAX_DEAD_LETTERS
    newest = entries[0]
    assert newest["size_bytes"] == len(big)
    assert newest["truncated"] is True
    assert len(raw_of(newest)) == MAX_RAW_BYTES
    assert entries[-1]["raw"] == "stray 21", "the oldest entries are dropped first"
    assert 0 < client.ttl(DEAD_LETTERS) <= 3600, "kept no longer than records (3600 s here)"
    shown = json.loads(halo_jobs("dead", "--json", "--limit", "1").stdout)
    assert shown[0]["replayable"] is False
    assert "kept cut" in shown[0]["not_replayable_because"]
    assert worker.running


def task_headers(task: str = TASK_NAME, **extra: Any) -> dict[str, Any]:
    """Protocol 2 task headers, as Celery writes them, with a fresh task id."""
    task_id = f"msg-{uuid.uuid4()}"
    made = {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "argsrepr": "(...)"}
    made.update(extra)
    return made


def job_body(job: dict[str, Any]) -> bytes:
    return json.dumps([[job], {}, {}]).encode()


def test_task_messages_celery_would_delete_are_dead_lettered_first(
    worker: WorkerProcess,
    producer: Producer,
    client: redis.Redis,
    redis_server: RedisServer,
    halo_jobs: HaloJobs,
) -> None:
    no_id = {k: v for k, v in task_headers().items() if k not in ("id", "root_id")}
    job_repr = {"argsrepr": repr([bare_job()])}
    messages = {
        # Plain Celery's default argsrepr is the job itself.
        "unknown_task": (
            job_body(bare_job()),
            task_headers("halo.update_tickets", **job_repr),
            JSON,
        ),
        "refused_content": (b"\x80\x04K\x01.", task_headers(), "application/x-python-serialize"),
        "unreadable_body": (b"not json{", task_headers(), JSON),
        "unknown_format": (job_body(bare_job()), {}, JSON),
        "no_task_id": (job_body(bare_job()), no_id, JSON),
    }
    with Connection(redis_server.url) as connection, connection.Producer() as publisher:
        for payload, headers, content_type in messages.values():
            publisher.publish(
                payload,
                exchange=Exchange(QUEUE, type="direct"),
                routing_key=QUEUE,
                content_type=content_type,
                content_encoding="utf-8",
                headers=headers,
                declare=[Queue(QUEUE, Exchange(QUEUE, type="direct"), routing_key=QUEUE)],
            )
    wait_until(lambda: counted(client) == len(messages), TAKEN_WAIT_S, "5 dead letters")

    entries = {entry["reason"]: entry for entry in dead_letters(client)}
    assert set(entries) == set(messages)
    for reason, (payload, headers, _) in messages.items():
        kept = json.loads(raw_of(entries[reason]))
        assert base64.b64decode(kept["body"]) == payload, reason
        assert kept["headers"] == headers, reason
        assert entries[reason]["queue"] == QUEUE
    assert "halo.update_tickets" in entries["unknown_task"]["detail"]
    shown = {entry["reason"]: entry for entry in json.loads(halo_jobs("dead", "--json").stdout)}
    replayable = {reason for reason, entry in shown.items() if entry["replayable"]}
    assert replayable == {"unknown_task", "unknown_format", "no_task_id"}
    assert MARKER not in json.dumps(shown)
    assert MARKER not in worker.log_text(), "a dropped message's job was logged"
    wait_until(lambda: client.hlen(UNACKED) == 0, TAKEN_WAIT_S, "every message acked or dropped")
    assert run_job(producer, new_job(status="Closed"))["outcome"] == "succeeded"
    assert worker.running


def test_task_messages_that_crashed_celerys_consumer_are_dead_lettered_and_the_worker_runs_on(
    worker: WorkerProcess,
    producer: Producer,
    client: redis.Redis,
    redis_server: RedisServer,
) -> None:
    # Celery 5.7.0 killed the worker on each (TypeError in its consumer), and since the message
    # was restored at shutdown, killed the next worker to take it too.
    messages = [
        ("unknown_task", job_body(bare_job()), {"task": "halo.nope"}),
        ("invalid_task", json.dumps({"task": ["x"], "id": "p1", "args": []}).encode(), {}),
    ]
    with Connection(redis_server.url) as connection, connection.Producer() as publisher:
        for _, payload, headers in messages:
            publisher.publish(
                payload,
                exchange=Exchange(QUEUE, type="direct"),
                routing_key=QUEUE,
                content_type=JSON,
                content_encoding="utf-8",
                headers=headers,
                declare=[Queue(QUEUE, Exchange(QUEUE, type="direct"), routing_key=QUEUE)],
            )

    record = run_job(producer, new_job(status="Closed"))

    assert record["outcome"] == "succeeded", record["error"]
    assert worker.running, "a task message killed the worker"
    kept = {entry["reason"]: json.loads(raw_of(entry)) for entry in dead_letters(client)}
    assert set(kept) == {reason for reason, _, _ in messages}
    for reason, payload, headers in messages:
        assert base64.b64decode(kept[reason]["body"]) == payload
        assert kept[reason]["headers"] == headers
    assert client.llen(QUEUE) == 0
