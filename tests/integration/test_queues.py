"""However a worker is started, no job waits on a queue that nothing consumes.

Workers are started the ordinary Celery way, with the options Celery users reach for: `-Q halo`
(the contract's queue), `-Q halo,other`, `-Q other`, `-X halo`. Everything the fleet publishes
for itself goes back to `halo`, so a worker that consumes `halo` runs every job to a record,
parked and retried ones included; a worker that would not consume it refuses to start; and a
consumer cancelled at run time shows in both health checks.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from fakehalo import FakeHalo
from fakehalo.seeds import plain_ticket
from producers.jobs import Producer
from tests.harness.processes import BIN, WorkerProcess
from tests.integration.harness import new_job, wait_for_record, wait_until
from worker.celeryconfig import RETIRED_BATCH_QUEUE
from worker.keys import BACKLOGS, DEFERRED, TICKET_WAITING, backlog_key
from worker.models import QUEUE, TASK_NAME

CANARY_INTERVAL_S = 0.5
MAX_AGE_S = 3.0
BURST = 20
TICKET_BASE = 91_000


@pytest.fixture
def queue_env(env_for: Callable[..., dict[str, str]], tmp_path: Path) -> dict[str, str]:
    return env_for(
        canary_interval_s=str(CANARY_INTERVAL_S),
        heartbeat_file=str(tmp_path / "heartbeat"),
        worker_concurrency="8",
    )


Start = Callable[..., WorkerProcess]


@pytest.fixture
def start(queue_env: dict[str, str], tmp_path: Path) -> Iterator[Start]:
    """Starts a worker with Celery options (``start(name, "-Q", "halo")``); stopped at the end."""
    started: list[WorkerProcess] = []

    def launch(name: str, *options: str) -> WorkerProcess:
        worker = WorkerProcess(queue_env, tmp_path / f"{name}.log", name=name, extra=list(options))
        started.append(worker)
        return worker.start()

    yield launch
    for worker in started:
        worker.stop(timeout_s=15)


def halo_jobs(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "halo-jobs"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def control_app(broker_url: str) -> Celery:
    app = Celery("control", broker=broker_url)
    app.conf.update(accept_content=["json"], task_serializer="json", result_serializer="json")
    return app


@pytest.mark.parametrize("queues", [["-Q", "halo"], ["-Q", "halo,other"]])
def test_a_worker_started_for_the_contracts_queue_records_every_parked_and_retried_job(
    queues: list[str],
    start: Start,
    producer: Producer,
    fake: FakeHalo,
    redis_client: redis.Redis,
) -> None:
    worker = start("only-halo", *queues)
    # Halo answers 429 twice: the connection pauses for every worker, the jobs that find no
    # budget are parked, and the backlog is released in batches.
    fake.fail_next(2, 429, path="/api/tickets", retry_after=1)
    # Distinct tickets, so the jobs wait for budget and not for each other's turn on a ticket.
    tickets = [TICKET_BASE + n for n in range(BURST)]
    for ticket in tickets:
        fake.add_ticket(**plain_ticket(ticket))
    job_ids = [producer.submit(new_job(ticket_id=str(t), summary="burst")) for t in tickets]
    records = [wait_for_record(producer, job_id, 60, worker=worker) for job_id in job_ids]
    assert [r["outcome"] for r in records] == ["succeeded"] * BURST
    assert any(r["attempts"] > 1 for r in records), "no job was retried after a 429"
    assert "halo.update_batch" in worker.log_text(), "no batch ran: nothing was parked"
    assert redis_client.llen(RETIRED_BATCH_QUEUE) == 0


@pytest.mark.parametrize(
    "options",
    [["-Q", "other"], ["-X", "halo"], ["-Q", "celery"]],
    ids=["Q-other", "X-halo", "Q-celery"],
)
def test_a_worker_that_would_not_consume_halo_refuses_to_start_and_says_what_to_run(
    options: list[str], queue_env: dict[str, str]
) -> None:
    ran = subprocess.run(
        [str(BIN / "celery"), "-A", "worker.app", "worker", "-n", "refused@%h", *options],
        env=queue_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode != 0
    said = ran.stdout + ran.stderr
    assert "-Q halo" in said, said[-2000:]
    assert "not the queue 'halo'" in said
    assert "Traceback" not in said


def test_a_cancelled_halo_consumer_fails_both_health_checks_until_a_worker_consumes_again(
    start: Start,
    queue_env: dict[str, str],
    producer: Producer,
    redis_server: Any,
) -> None:
    worker = start("cancelled")
    wait_until(lambda: halo_jobs(queue_env, "health", "--worker").returncode == 0, 20, "health")
    assert halo_jobs(queue_env, "health", "--max-age", str(MAX_AGE_S)).returncode == 0

    control = control_app(redis_server.url)
    node = f"cancelled@{socket.gethostname()}"
    replies = control.control.cancel_consumer(QUEUE, destination=[node], reply=True, timeout=5)
    assert replies, "the worker did not answer cancel_consumer"

    def worker_check() -> subprocess.CompletedProcess[str]:
        return halo_jobs(queue_env, "health", "--worker", "--max-age", str(MAX_AGE_S))

    wait_until(lambda: worker_check().returncode == 1, 20, "the liveness check to fail")
    assert "no longer consumes the queue 'halo'" in worker_check().stderr

    job_id = producer.submit(new_job(status="Closed"))
    fleet = halo_jobs(queue_env, "health", "--max-age", str(MAX_AGE_S))
    assert fleet.returncode == 1
    assert "wait on the queue 'halo' and no worker has consumed it" in fleet.stderr

    # A worker consuming `halo` again (as a restarted container would) takes the job.
    control.control.add_consumer(QUEUE, destination=[node], reply=True, timeout=5)
    assert wait_for_record(producer, job_id, 30, worker=worker)["outcome"] == "succeeded"
    wait_until(lambda: worker_check().returncode == 0, 20, "the liveness check to pass again")
    assert halo_jobs(queue_env, "health", "--max-age", str(MAX_AGE_S)).returncode == 0


def test_work_waiting_with_no_worker_at_all_shows_in_the_fleet_check(
    queue_env: dict[str, str], producer: Producer, redis_client: redis.Redis
) -> None:
    assert halo_jobs(queue_env, "health", "--max-age", str(MAX_AGE_S)).returncode == 0
    producer.submit(new_job(status="Closed"))
    # As a fleet that stopped leaves them: a retry long overdue, a parked job, a ticket wait.
    overdue_ms = int((time.time() - 10 * MAX_AGE_S) * 1000)
    redis_client.zadd(DEFERRED, {"it-overdue": overdue_ms})
    redis_client.sadd(BACKLOGS, "acme")
    redis_client.zadd(backlog_key("acme"), {"it-parked": 1})
    redis_client.hset(TICKET_WAITING, "it-waiting", "halo:ticket:acme:4711")
    try:
        fleet = halo_jobs(queue_env, "health", "--max-age", str(MAX_AGE_S))
        assert fleet.returncode == 1, fleet.stdout
        said = fleet.stderr.splitlines()
        assert len(said) == 4, fleet.stderr
        assert "wait on the queue 'halo'" in said[0]
        assert "no worker has announced itself" in said[0]
        assert "the oldest is" in said[1]
        assert "overdue" in said[1]
        assert "parked for Halo budget (acme: 1)" in said[2]
        assert "wait for their ticket's turn" in said[3]
    finally:
        redis_client.delete(QUEUE)  # no later test's worker should find this job


def test_messages_left_on_the_retired_batch_queue_are_moved_to_halo_and_run(
    start: Start,
    producer: Producer,
    redis_server: Any,
    redis_client: redis.Redis,
) -> None:
    # As an earlier release left them: messages on `halo.batch`, which no worker consumes now.
    sender = control_app(redis_server.url)
    job = new_job(status="Closed")
    sender.send_task(TASK_NAME, args=[job], queue=RETIRED_BATCH_QUEUE, task_id=job["job_id"])
    assert redis_client.llen(RETIRED_BATCH_QUEUE) == 1
    worker = start("drains", "-Q", "halo")
    assert wait_for_record(producer, job["job_id"], 30, worker=worker)["outcome"] == "succeeded"
    assert redis_client.llen(RETIRED_BATCH_QUEUE) == 0
