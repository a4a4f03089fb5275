"""Checks of the tests of producers that are not this library (plain Celery, celery-node, a
raw LPUSH): one job, one record under the right key, once, and nothing of its content shown.
Their fixtures are in `tests.integration.fixtures_foreign`.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from producers.jobs import Producer
from tests.harness.processes import BIN, WorkerProcess
from tests.integration.harness import (
    Job,
    Record,
    feed_entries,
    new_job,
    wait_for_deliveries,
    wait_for_record,
)
from tests.integration.task_events import TaskEvents
from worker.models import redacted_fields

# Events reach the receiver a moment after the record is written; a test waits this long only
# when one is missing.
EVENT_WAIT_S = 20.0


def marked_job(*, with_job_id: bool) -> tuple[Job, str]:
    """A job that closes ticket 4711, whose variables and meta carry a fresh marker; and the
    marker.

    The marker stands for email content: it must never be shown outside the record. It sits
    at two depths, since Python's `repr` of a job, cut at a depth as Celery does, may show
    one and not the other.
    """
    marker = f"EMAIL-{uuid.uuid4().hex}"
    job = new_job(
        ticket_id="{{custom.ticket.id}}",
        status="Closed",
        variables={"custom": {"ticket": {"id": 4711}}, "email": {"subject": marker}},
        meta={"message_id": f"<{marker}@mail.example>"},
    )
    if not with_job_id:
        del job["job_id"]
    return job, marker


@dataclass(frozen=True)
class Fleet:
    """What a check looks at: the worker, its events, the result store and the CLI's env."""

    worker: WorkerProcess
    events: TaskEvents
    producer: Producer
    redis_client: redis.Redis
    env_for: Callable[..., dict[str, str]]

    def recorded_once(
        self, job: Mapping[str, Any], *, key: str, task_id: str, marker: str
    ) -> Record:
        """Check that the job sent as task `task_id` ended in one record under `key`, and that
        its content (`marker`) appears in no event and no log line. Returns the record."""
        record = wait_for_record(self.producer, key, worker=self.worker)
        assert record["job_id"] == key
        assert record["outcome"] == "succeeded", record["error"]
        assert record["changed_fields"] == ["status_id"]
        # One delivery, which wrote the record; its task events name the task id it was sent as.
        assert wait_for_deliveries(self.worker, task_id, 1) == ["recorded"]
        self.events.wait_for(task_id, "task-succeeded", EVENT_WAIT_S)
        received = self.events.wait_for(task_id, "task-received", EVENT_WAIT_S)
        assert json.loads(received["args"]) == [redacted_fields(job)]
        assert marker not in self.events.text()
        assert marker not in self.worker.log_text()
        # Readable where a rule runner reads it: the feed (once), the producer API, the CLI.
        entries = [f for _, f in feed_entries(self.redis_client) if f["job_id"] == key]
        assert len(entries) == 1, entries
        assert json.loads(entries[0]["record"]) == record
        assert self.producer.result(key) == record
        printed = subprocess.run(
            [str(BIN / "halo-jobs"), "result", key],
            capture_output=True,
            text=True,
            env=self.env_for(),
            timeout=60,
            check=False,
        )
        assert printed.returncode == 0, printed.stderr
        assert json.loads(printed.stdout) == record
        return record
