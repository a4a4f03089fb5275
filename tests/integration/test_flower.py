"""Flower, end to end: a real Flower with basic auth, watching a real worker on a real Redis.

Workers and tasks show up through Flower's HTTP API, but a task's arguments show only the
redacted view of its job (job_id, connection, ticket_id template), also after the job was
deferred and sent again, inside a released batch, and in the worker's live task list; the API
refuses callers without credentials; and `/metrics` serves Flower's task metrics.

A task's state tells what became of its job: a failed job is FAILURE naming its error code and
disposition, a deferred one is RETRY naming the wait until it runs again, and neither is
delivered again by Celery.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery

from fakehalo import FakeHalo
from producers.jobs import Producer
from tests.harness.processes import FlowerProcess, RedisServer, WorkerProcess
from tests.integration.harness import (
    deliveries,
    feed_entries,
    new_job,
    run_job,
    wait_for_record,
    wait_until,
)
from worker.models import QUEUE, TASK_NAME

USER, PASSWORD = "ops", f"pw-{uuid.uuid4().hex}"
BATCH_TASK_NAME = "halo.update_batch"
FLOWER_WAIT_S = 20.0
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Headless, and quiet on a machine without outside network: no background requests at all.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=2400,700",
    # Time for the tasks table, which Flower fills from its API after the page loads.
    "--virtual-time-budget=8000",
]
BROWSER_TIMEOUT_S = 60.0
ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@pytest.fixture(scope="module")
def flower(
    worker: WorkerProcess,
    env_for: Callable[..., dict[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FlowerProcess]:
    """Flower with basic auth, started after the module's worker, stopped at the end."""
    del worker
    env = env_for()
    env["FLOWER_BASIC_AUTH"] = f"{USER}:{PASSWORD}"
    process = FlowerProcess(env, tmp_path_factory.mktemp("flower") / "flower.log")
    process.start()
    yield process
    process.stop(timeout_s=10)


@pytest.fixture(scope="module")
def api(flower: FlowerProcess) -> Iterator[httpx.Client]:
    """An authenticated client of Flower's HTTP API, once Flower sees the worker."""
    with httpx.Client(base_url=flower.url, auth=(USER, PASSWORD), timeout=10) as client:
        wait_until(lambda: bool(client.get("/api/workers").json()), FLOWER_WAIT_S, "a worker")
        yield client


def job_with_text(marker: str, **fields: Any) -> dict[str, Any]:
    """A job whose variables, summary, details and meta carry `marker`."""
    text: dict[str, Any] = {
        "ticket_id": "{{custom.ticket.id}}",
        "summary": f"SUMMARY-{marker}",
        "details": f"<p>DETAILS-{marker}</p>",
        "variables": {"custom": {"ticket": {"id": 4711}, "note": f"VARIABLE-{marker}"}},
        "meta": {"rule_id": f"META-{marker}"},
    }
    return new_job(**{**text, **fields})


def tasks(api: httpx.Client) -> dict[str, dict[str, Any]]:
    answer = api.get("/api/tasks", params={"limit": 1000})
    answer.raise_for_status()
    found: dict[str, dict[str, Any]] = answer.json()
    return found


def settled(api: httpx.Client, job_ids: list[str], state: str = "SUCCESS") -> bool:
    """Whether Flower shows every job's task in `state`."""
    seen = tasks(api)
    return all(seen.get(job_id, {}).get("state") == state for job_id in job_ids)


def batches_succeeded(seen: dict[str, dict[str, Any]]) -> int:
    """How many jobs the batch tasks Flower shows say succeeded, from their results."""
    results = [str(t["result"]) for t in seen.values() if t["name"] == BATCH_TASK_NAME]
    return sum(int(n) for r in results for n in re.findall(r"(\d+) succeeded", r))


def shows_only_the_redacted_view(task: dict[str, Any], job: dict[str, Any]) -> None:
    args = json.loads(task["args"])
    assert args == [{k: job[k] for k in ("job_id", "connection", "ticket_id")}], task["args"]
    # When the producer accepted the job: a time, nothing from the job.
    kwargs = json.loads(task["kwargs"])
    assert set(kwargs) == {"submitted_at"}, task["kwargs"]
    assert ISO_TIME.match(kwargs["submitted_at"]), task["kwargs"]


def task_info(api: httpx.Client, job_id: str) -> dict[str, Any]:
    answer = api.get(f"/api/task/info/{job_id}")
    answer.raise_for_status()
    info: dict[str, Any] = answer.json()
    return info


def messages_holding(redis_client: redis.Redis, job_id: str) -> list[str]:
    """Where the broker still holds a message of `job_id`: its queue, or kombu's hash of
    delivered but unacknowledged messages."""
    places = [f"queue {QUEUE}" for m in redis_client.lrange(QUEUE, 0, -1) if job_id in m]
    unacked = redis_client.hvals("unacked")
    return places + ["unacked" for m in unacked if job_id in m]


def test_flower_shows_workers_and_tasks_with_redacted_arguments_only(
    api: httpx.Client, producer: Producer, fake: FakeHalo, redis_client: redis.Redis
) -> None:
    marker = uuid.uuid4().hex
    plain = job_with_text(marker, status="Closed")
    retried = job_with_text(marker, status="Waiting on Customer")
    fake.fail_next(2, 503, path="/api/tickets", method="GET")
    record = run_job(producer, retried)
    assert (record["outcome"], record["attempts"]) == ("succeeded", 3)
    run_job(producer, plain)
    # A paused connection (as after a 429) parks jobs; they are released as one batch.
    redis_client.set("halo:rate:acme:pause", "1", px=1500)
    batched = [job_with_text(marker, ticket_id=str(t), status="Closed") for t in (4712, 4713)]
    for job in batched:
        producer.submit(job)
    for job in batched:
        wait_for_record(producer, job["job_id"])
    singles = [plain["job_id"], retried["job_id"]]

    wait_until(lambda: settled(api, singles), FLOWER_WAIT_S, "Flower to see the jobs succeed")
    parked_ids = [job["job_id"] for job in batched]
    # Parked (RETRY), then run in a batch, which reports each job on the job's own line.
    wait_until(lambda: settled(api, parked_ids), FLOWER_WAIT_S, "the batched jobs to succeed")
    # The batch reports its jobs' lines before its own task ends: wait for its own result too.
    wait_until(
        lambda: batches_succeeded(tasks(api)) == len(batched),
        FLOWER_WAIT_S,
        "the batch tasks' results",
    )

    seen = tasks(api)
    assert marker not in json.dumps(seen)
    for job in (plain, retried):
        task = seen[job["job_id"]]
        assert task["name"] == TASK_NAME
        shows_only_the_redacted_view(task, job)
        info = api.get(f"/api/task/info/{job['job_id']}").json()
        assert marker not in json.dumps(info)
        shows_only_the_redacted_view(info, job)
    batches = [t for t in seen.values() if t["name"] == BATCH_TASK_NAME]
    assert batches, "the parked jobs were not released as a batch"
    shown = json.dumps([json.loads(t["args"]) for t in batches])
    for job in batched:
        assert job["job_id"] in shown
        # Its own task says it waited for budget, and how the batch that ran it ended it.
        parked = seen[job["job_id"]]
        assert parked["retried"] is not None, parked
        assert "parked: waiting for Halo budget" in str(parked["exception"]), parked
        batch_ids = [t["uuid"] for t in batches]
        assert re.match(r"^'recorded in batch ([0-9a-f-]+): succeeded; ", str(parked["result"]))
        assert any(batch_id in str(parked["result"]) for batch_id in batch_ids), parked
    assert batches_succeeded(seen) == len(batched), [t["result"] for t in batches]
    workers = api.get("/api/workers").json()
    assert any(name.startswith("test_flower@") for name in workers)


def test_a_running_jobs_arguments_are_redacted_in_flowers_live_worker_view(
    api: httpx.Client, producer: Producer, fake: FakeHalo
) -> None:
    marker = uuid.uuid4().hex
    # The ticket read hangs past the read timeout: the job stays active a while, then retries.
    fake.hang_next(1, seconds=3, path="/api/tickets", method="GET")
    job = job_with_text(marker, status="Closed")
    name = next(n for n in api.get("/api/workers").json() if n.startswith("test_flower@"))
    producer.submit(job)
    workers: dict[str, Any] = {}

    def active_in_flower() -> bool:
        # With a worker name Flower also asks it for its task lists: active, reserved,
        # scheduled (Flower 2.2 asks only `active` for the safe view; the request class
        # makes every view safe).
        nonlocal workers
        query = {"refresh": 1, "workername": name}
        workers = api.get("/api/workers", params=query).json()
        return job["job_id"] in json.dumps(workers)

    wait_until(active_in_flower, FLOWER_WAIT_S, "the job to show as active in Flower")

    assert marker not in json.dumps(workers)
    live = workers[name]["active"] + workers[name]["reserved"]
    shows_only_the_redacted_view(next(t for t in live if t["id"] == job["job_id"]), job)
    assert wait_for_record(producer, job["job_id"])["outcome"] == "succeeded"


def test_the_api_refuses_callers_without_the_right_credentials(flower: FlowerProcess) -> None:
    for path in ("/api/workers", "/api/tasks", f"/api/task/info/{uuid.uuid4()}"):
        assert httpx.get(flower.url + path, timeout=10).status_code == 401, path
        wrong = httpx.get(flower.url + path, auth=(USER, "wrong"), timeout=10)
        assert wrong.status_code == 401, path


def test_flower_serves_task_metrics_to_prometheus(
    api: httpx.Client, flower: FlowerProcess, producer: Producer
) -> None:
    run_job(producer, new_job(status="Closed"))

    def counted() -> bool:
        text = httpx.get(flower.url + "/metrics", timeout=10).text  # no credentials needed
        return 'task="halo.update_ticket"' in text and 'type="task-succeeded"' in text

    wait_until(counted, FLOWER_WAIT_S, "Flower's task metrics")
    text = httpx.get(flower.url + "/metrics", timeout=10).text
    assert "flower_events_total{" in text
    assert "flower_task_runtime_seconds_bucket{" in text
    assert "flower_worker_online{" in text
    del api


def test_a_failed_job_shows_as_failure_naming_its_code_and_disposition_and_is_not_redelivered(
    api: httpx.Client,
    producer: Producer,
    fake: FakeHalo,
    redis_client: redis.Redis,
    worker: WorkerProcess,
) -> None:
    marker = uuid.uuid4().hex
    missing = job_with_text(marker, ticket_id="999999", status="Closed", error_handling="Stop All")
    refused = job_with_text(marker, status="Closed", error_handling="bounce")
    fake.fail_next(1, 400, f"cannot save SUMMARY-{marker}", path="/api/tickets", method="POST")
    for job in (missing, refused):
        assert run_job(producer, job)["outcome"] == "failed"
    failed = [missing["job_id"], refused["job_id"]]
    # A later job done shows the worker went on past both messages.
    run_job(producer, new_job(status="Closed"))

    wait_until(lambda: settled(api, failed, "FAILURE"), FLOWER_WAIT_S, "Flower to see failures")

    shown = {job_id: task_info(api, job_id) for job_id in failed}
    assert "ticket_not_found (HTTP 404, field ticket_id), disposition stop_all" in str(
        shown[missing["job_id"]]["exception"]
    )
    assert "halo_rejected (HTTP 400), disposition bounce" in str(
        shown[refused["job_id"]]["exception"]
    )
    for job in (missing, refused):
        info = shown[job["job_id"]]
        shows_only_the_redacted_view(info, job)
        assert not info["traceback"], info["traceback"]  # an outcome, not a crash
        failed_tab = api.get("/api/tasks", params={"state": "FAILURE", "limit": 1000}).json()
        assert job["job_id"] in failed_tab
    # Exactly once: one delivery, acked, one record, and Halo saw one POST (the refused one).
    for job_id in failed:
        assert deliveries(worker, job_id) == ["recorded"]
        assert messages_holding(redis_client, job_id) == []
        lines = [line for line in worker.log_text().splitlines() if job_id in line]
        assert not [line for line in lines if "Traceback" in line], lines
    fed = [fields["job_id"] for _, fields in feed_entries(redis_client)]
    assert sorted(j for j in fed if j in failed) == sorted(failed)
    assert len(fake.posts()) == 2  # the refused job's, and the later job's
    assert marker not in json.dumps(tasks(api))
    assert marker not in worker.log_text()


def test_a_deferred_job_shows_as_retry_naming_its_wait_then_as_success(
    api: httpx.Client,
    producer: Producer,
    fake: FakeHalo,
    redis_client: redis.Redis,
    worker: WorkerProcess,
) -> None:
    marker = uuid.uuid4().hex
    # Halo asks for 3 s: the job waits in the deferred set at least that long.
    fake.fail_next(1, 503, path="/api/tickets", method="GET", retry_after=3)
    job = job_with_text(marker, status="Closed")
    producer.submit(job)

    wait_until(lambda: settled(api, [job["job_id"]], "RETRY"), FLOWER_WAIT_S, "a RETRY")
    waiting = task_info(api, job["job_id"])
    record = wait_for_record(producer, job["job_id"])
    wait_until(lambda: settled(api, [job["job_id"]]), FLOWER_WAIT_S, "the retried job to succeed")

    assert re.search(
        r"deferred: halo_unavailable, next try at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
        str(waiting["exception"]),
    ), waiting["exception"]
    assert not waiting["traceback"], waiting["traceback"]
    shows_only_the_redacted_view(waiting, job)
    done = task_info(api, job["job_id"])
    assert record["outcome"] == "succeeded"
    assert str(done["result"]).startswith("'recorded: succeeded; changed"), done["result"]
    assert done["retried"] is not None
    shows_only_the_redacted_view(done, job)
    # Celery published nothing for the wait: the worker's mover sent the job once more.
    assert deliveries(worker, job["job_id"]) == ["deferred", "recorded"]
    assert messages_holding(redis_client, job["job_id"]) == []
    assert len(fake.posts()) == 1
    fed = [fields["job_id"] for _, fields in feed_entries(redis_client)]
    assert fed.count(job["job_id"]) == 1
    assert marker not in json.dumps(tasks(api))
    assert marker not in worker.log_text()


def test_flowers_tasks_page_has_the_columns_that_tell_a_jobs_outcome(api: httpx.Client) -> None:
    page = api.get("/tasks")
    page.raise_for_status()
    headers = re.findall(r"<th[^>]*>\s*([^<]+?)\s*</th>", page.text)
    for label in ("State", "args", "kwargs", "Result", "Exception"):
        assert label in headers, headers


def test_a_job_sent_by_plain_celery_as_a_keyword_argument_shows_only_its_redacted_view(
    api: httpx.Client, producer: Producer, redis_server: RedisServer, worker: WorkerProcess
) -> None:
    marker = uuid.uuid4().hex
    job = job_with_text(marker, status="Closed")
    # No argsrepr or kwargsrepr, and a submitted_at that is not a time: the worker decides
    # what Flower sees.
    client = Celery("plain", broker=redis_server.url)
    kwargs = {"job": job, "submitted_at": f"VARIABLE-{marker}"}
    client.send_task(TASK_NAME, kwargs=kwargs, task_id=job["job_id"], queue=QUEUE)
    client.close()

    assert wait_for_record(producer, job["job_id"])["outcome"] == "succeeded"
    wait_until(lambda: settled(api, [job["job_id"]]), FLOWER_WAIT_S, "Flower to see it succeed")

    info = task_info(api, job["job_id"])
    assert json.loads(info["args"]) == []
    redacted = {k: job[k] for k in ("job_id", "connection", "ticket_id")}
    assert json.loads(info["kwargs"]) == {"job": redacted, "submitted_at": "<not shown>"}
    assert marker not in json.dumps(info)
    assert marker not in worker.log_text()


def browse(url: str, profile: Path, *output: str) -> str:
    """Run headless Chromium on `url` with a fresh profile; returns what it printed."""
    assert CHROMIUM is not None
    argv = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *output, url]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (CI does not install it; the Flower API tests above "
    "check the same states)",
)
def test_flowers_tasks_page_in_a_browser_shows_a_failed_a_waiting_and_a_succeeded_job(
    api: httpx.Client,
    flower: FlowerProcess,
    producer: Producer,
    fake: FakeHalo,
    tmp_path: Path,
) -> None:
    marker = uuid.uuid4().hex
    # Halo asks for 30 s (inside the tests' 60 s retry budget): the job still waits when the
    # page is read.
    fake.fail_next(1, 503, path="/api/tickets", method="GET", retry_after=30)
    waiting = job_with_text(marker, status="Closed")
    producer.submit(waiting)
    wait_until(lambda: settled(api, [waiting["job_id"]], "RETRY"), FLOWER_WAIT_S, "a RETRY")
    failed = job_with_text(marker, ticket_id="999999", status="Closed", error_handling="Stop All")
    run_job(producer, failed)
    done = job_with_text(marker, ticket_id="4712", status="Closed")
    run_job(producer, done)
    wait_until(lambda: settled(api, [failed["job_id"]], "FAILURE"), FLOWER_WAIT_S, "a FAILURE")
    wait_until(lambda: settled(api, [done["job_id"]]), FLOWER_WAIT_S, "a SUCCESS")
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:{flower.port}/tasks"

    page = browse(url, tmp_path / "profile-dom", "--dump-dom")
    screenshot = tmp_path / "flower-tasks.png"
    browse(url, tmp_path / "profile-png", f"--screenshot={screenshot}")

    rows = {
        job_id: row
        for row in re.findall(r"<tr[^>]*>.*?</tr>", page, flags=re.DOTALL)
        for job_id in (failed["job_id"], waiting["job_id"], done["job_id"])
        if job_id in row
    }
    assert ">FAILURE<" in rows[failed["job_id"]], rows
    assert (
        "ticket_not_found (HTTP 404, field ticket_id), disposition stop_all"
        in rows[failed["job_id"]]
    )
    assert ">RETRY<" in rows[waiting["job_id"]], rows
    assert "deferred: halo_unavailable, next try at" in rows[waiting["job_id"]]
    assert ">SUCCESS<" in rows[done["job_id"]], rows
    assert "recorded: succeeded; changed" in rows[done["job_id"]]
    assert marker not in page
    assert screenshot.stat().st_size > 0
    # The failed task's own page: its exception, and no traceback (an outcome, not a crash).
    detail_url = f"http://{USER}:{PASSWORD}@127.0.0.1:{flower.port}/task/{failed['job_id']}"
    detail = browse(detail_url, tmp_path / "profile-task", "--dump-dom")
    detail_shot = tmp_path / "flower-failed-task.png"
    tall = "--window-size=1600,1400"  # the whole page: the exception row sits low
    browse(detail_url, tmp_path / "profile-task-png", tall, f"--screenshot={detail_shot}")
    assert "disposition stop_all" in detail
    assert "Traceback" not in detail
    assert marker not in detail
    print(f"screenshots: {screenshot} {detail_shot}")  # for a person checking them by eye
