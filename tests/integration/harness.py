"""What the integration tests share besides fixtures: building jobs and waiting on outcomes."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

import redis

from producers.jobs import Producer
from tests.harness.processes import WorkerProcess
from worker.keys import RESULTS_STREAM

SECRET_ENV = "HALO_ACME_SECRET"
# Long enough for a job that retries a few times; a test waits this long only when it fails.
RECORD_WAIT_S = 30.0

# Small timeouts keep fault tests fast. They satisfy the settings' own rule that the
# visibility timeout outlasts a job (deadline + one read timeout).
TEST_SETTINGS: dict[str, str] = {
    "visibility_timeout_s": "10",
    "job_deadline_s": "4",
    "http_read_timeout_s": "2",
    "http_connect_timeout_s": "1",
    "retry_base_s": "0.1",
    "retry_cap_s": "0.5",
    "retry_max_attempts": "4",
    "retry_max_total_s": "60",
    "worker_concurrency": "4",
    "result_ttl_s": "3600",
}

Job = dict[str, Any]
Record = dict[str, Any]


def new_job(**fields: Any) -> Job:
    """A job on the `acme` connection for ticket 4711 with a fresh job_id; `fields` override."""
    job: Job = {"job_id": f"it-{uuid.uuid4()}", "connection": "acme", "ticket_id": "4711"}
    job.update(fields)
    return job


def wait_for_record(
    producer: Producer,
    job_id: str,
    timeout_s: float = RECORD_WAIT_S,
    *,
    worker: WorkerProcess | None = None,
) -> Record:
    """The job's record; fails the test when there is none within `timeout_s`, quoting the
    end of `worker`'s log when given."""
    record = producer.wait(job_id, timeout_s)
    if record is None:
        raise AssertionError(f"no record for {job_id} within {timeout_s:g} s{_log_tail(worker)}")
    return record


def feed_entries(client: redis.Redis) -> list[tuple[str, dict[str, str]]]:
    """Every entry of the completion feed, oldest first (`client` decodes responses)."""
    return cast(list[tuple[str, dict[str, str]]], client.xrange(RESULTS_STREAM))


def run_job(producer: Producer, job: Job, timeout_s: float = RECORD_WAIT_S) -> Record:
    """Submit a job and return its record."""
    return wait_for_record(producer, producer.submit(job), timeout_s)


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    *,
    worker: WorkerProcess | None = None,
) -> None:
    """Poll `condition` every 10 ms; fails the test after `timeout_s`, quoting the end of
    `worker`'s log when given."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout_s:g} s waiting for {what}{_log_tail(worker)}"
            )
        time.sleep(0.01)


def deliveries(worker: WorkerProcess, task_id: str) -> list[str]:
    """What became of the worker's finished deliveries of a task ("recorded", "duplicate",
    "deferred", ...), read from Celery's own log lines: ``Task <name>[<id>] succeeded in <s>s:
    'recorded: ...'``, ``... retry: deferred: ...`` and ``... raised expected:
    JobFailed('recorded: ...')``."""
    ends = r"succeeded in [0-9.e-]+s: '|retry: |raised expected: JobFailed\('"
    pattern = re.compile(rf"\[{re.escape(task_id)}\] (?:{ends})([a-z_]+)")
    return pattern.findall(worker.log_text())


def wait_for_deliveries(worker: WorkerProcess, task_id: str, count: int) -> list[str]:
    """Wait until the worker has finished `count` deliveries of a task; returns their results."""
    wait_until(
        lambda: len(deliveries(worker, task_id)) >= count,
        RECORD_WAIT_S,
        f"{count} finished deliveries of {task_id}",
        worker=worker,
    )
    return deliveries(worker, task_id)


def _log_tail(worker: WorkerProcess | None) -> str:
    if worker is None:
        return ""
    return f"\n--- end of {worker.log_path} ---\n{worker.log_text()[-4000:]}"
