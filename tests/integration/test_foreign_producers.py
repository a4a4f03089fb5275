"""Producers that are not this library: a plain Celery app, and a raw LPUSH as docs/producers.md
lays it out. Each job ends in one record under its `job_id` (the task id when it has none),
once, and its variables show in no task event (what Flower shows) and no log line, although
such producers set no `argsrepr` the worker could trust.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from fakehalo import FakeHalo
from tests.harness.processes import RedisServer
from tests.integration.foreign import Fleet, marked_job
from tests.integration.harness import wait_for_deliveries

pytest_plugins = ["tests.integration.fixtures_foreign"]

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def ingestion(redis_server: RedisServer) -> Iterator[Celery]:
    """A Celery app that knows nothing of this project but the broker URL."""
    app = Celery("ingestion", broker=redis_server.url, set_as_current=False)
    yield app
    app.close()


@pytest.mark.parametrize(
    ("with_job_id", "with_task_id"),
    [(True, False), (True, True), (False, False), (False, True)],
    ids=["own-job-id", "own-job-id-as-task-id", "no-job-id", "no-job-id-given-task-id"],
)
def test_a_plain_celery_send_task_gets_one_record_under_the_job_id_or_task_id(
    foreign_fleet: Fleet, ingestion: Celery, fake: FakeHalo, with_job_id: bool, with_task_id: bool
) -> None:
    job, marker = marked_job(with_job_id=with_job_id)
    task_id = str(job.get("job_id") or uuid.uuid4()) if with_task_id else None

    sent = ingestion.send_task("halo.update_ticket", args=[job], queue="halo", task_id=task_id)

    key = job.get("job_id") or sent.id
    foreign_fleet.recorded_once(job, key=key, task_id=sent.id, marker=marker)
    assert len(fake.posts()) == 1


def test_a_plain_celery_job_that_halo_fails_once_is_sent_again_and_recorded_once(
    foreign_fleet: Fleet, ingestion: Celery, fake: FakeHalo
) -> None:
    job, marker = marked_job(with_job_id=True)
    fake.fail_next(1, 503, path="/api/tickets", method="GET")

    sent = ingestion.send_task("halo.update_ticket", args=[job], queue="halo")

    # The worker defers the first delivery and sends the job again itself, as task job_id.
    assert wait_for_deliveries(foreign_fleet.worker, sent.id, 1) == ["deferred"]
    record = foreign_fleet.recorded_once(
        job, key=job["job_id"], task_id=job["job_id"], marker=marker
    )
    assert record["attempts"] == 2
    assert len(fake.posts()) == 1


def test_a_message_pushed_exactly_as_documented_gets_its_record(
    foreign_fleet: Fleet, redis_client: redis.Redis, fake: FakeHalo
) -> None:
    envelope_text, body_text = documented_message()
    envelope = json.loads(envelope_text)
    # The documented body and the base64 inside the documented message are the same job.
    assert json.loads(base64.b64decode(envelope["body"])) == json.loads(body_text)
    [job], kwargs, _ = json.loads(body_text)

    redis_client.lpush("halo", envelope_text)

    record = foreign_fleet.recorded_once(
        job,
        key=job["job_id"],
        task_id=envelope["headers"]["id"],
        marker=job["variables"]["email"]["subject"],
    )
    assert record["submitted_at"] == kwargs["submitted_at"]
    assert len(fake.posts()) == 1


@pytest.mark.parametrize("with_job_id", [True, False], ids=["own-job-id", "no-job-id"])
def test_the_raw_python_example_gets_one_record_per_job(
    foreign_fleet: Fleet,
    redis_server: RedisServer,
    fake: FakeHalo,
    tmp_path: Path,
    with_job_id: bool,
) -> None:
    job, marker = marked_job(with_job_id=with_job_id)
    (tmp_path / "job.json").write_text(json.dumps(job))

    pushed = subprocess.run(
        [sys.executable, str(DOCS / "examples" / "push_raw.py"), redis_server.url, "-"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert pushed.returncode == 0, pushed.stderr
    ids = json.loads(pushed.stdout)
    assert ids["job_id"] == job.get("job_id", ids["task_id"])
    foreign_fleet.recorded_once(job, key=ids["job_id"], task_id=ids["task_id"], marker=marker)
    assert len(fake.posts()) == 1


def documented_message() -> tuple[str, str]:
    """The raw message of docs/producers.md, as its text, and the body it documents."""
    blocks = re.findall(r"```json\n(.*?)```", (DOCS / "producers.md").read_text(), re.DOTALL)
    envelopes = [b for b in blocks if '"delivery_tag"' in b]
    bodies = [b for b in blocks if b.lstrip().startswith("[")]
    assert len(envelopes) == 1, "docs/producers.md documents one raw message"
    assert len(bodies) == 1, "docs/producers.md documents one protocol 2 body"
    return envelopes[0], bodies[0]
