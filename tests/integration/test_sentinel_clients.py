"""Every process that talks to Redis finds the primary through Sentinel: a worker (with its
metrics exporter), the producer API, `halo-jobs` and Flower, all given only the sentinels'
addresses in kombu's ``sentinel://`` form; and a worker on Sentinel keeps the dead-letter
checks of `worker.transport`. (The failover itself, under load, is
`tests/reliability/test_sentinel_failover.py`.)
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from fakehalo import DEMO_CLIENT_SECRET
from producers.jobs import Producer
from tests.harness.processes import (
    BIN,
    FlowerProcess,
    RedisServer,
    WorkerProcess,
    free_port,
    service_env,
)
from tests.harness.sentinel import ReplicationGroup
from tests.integration.harness import (
    SECRET_ENV,
    TEST_SETTINGS,
    new_job,
    wait_for_record,
    wait_until,
)
from worker.deadletters import Reason
from worker.keys import DEAD_LETTERS
from worker.models import QUEUE
from worker.redisconn import RedisOptions

FLOWER_USER, FLOWER_PASSWORD = "ops", "sentinel-test-flower"


@pytest.fixture(scope="module")
def group(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReplicationGroup]:
    del redis_server  # started first: it skips (or fails in CI) without redis-server
    with ReplicationGroup(tmp_path_factory.mktemp("sentinel")) as started:
        yield started


def scrape(port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text: str = answer.read().decode()
        return text


@pytest.mark.timeout(180)
def test_the_worker_producers_flower_and_metrics_find_the_primary_through_sentinel(
    group: ReplicationGroup, connections_file: Path, tmp_path: Path
) -> None:
    metrics_port = free_port()
    env = service_env(
        broker_url=group.url,
        connections_file=connections_file,
        secrets={SECRET_ENV: DEMO_CLIENT_SECRET},
        **{
            **TEST_SETTINGS,
            "heartbeat_file": str(tmp_path / "heartbeat"),
            "metrics_port": str(metrics_port),
            "redis_min_replicas_acked": "1",
        },
    )
    worker = WorkerProcess(env, tmp_path / "worker.log", name="sentinel").start()
    flower = FlowerProcess(
        {**env, "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}"}, tmp_path / "flower.log"
    )
    try:
        with Producer(broker_url=group.url, options=RedisOptions()) as producer:
            record = wait_for_record(producer, producer.submit(new_job()), worker=worker)
        assert record["outcome"] == "succeeded"

        shown = subprocess.run(
            [str(BIN / "halo-jobs"), "result", record["job_id"]],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["job_id"] == record["job_id"]

        assert "halo_metrics_redis_up 1.0" in scrape(metrics_port)

        flower.start()
        with httpx.Client(
            base_url=flower.url, auth=(FLOWER_USER, FLOWER_PASSWORD), timeout=10
        ) as api:
            wait_until(lambda: bool(api.get("/api/workers").json()), 30, "Flower to see the worker")
            queues = api.get("/api/queues/length")
            assert queues.status_code == 200, queues.text
            assert "halo" in {q["name"] for q in queues.json()["active_queues"]}
    finally:
        flower.stop(10)
        worker.stop(15)


@pytest.mark.timeout(180)
def test_a_worker_on_sentinel_moves_a_stray_queue_item_to_the_dead_letter_list_and_runs_on(
    group: ReplicationGroup, connections_file: Path, tmp_path: Path
) -> None:
    env = service_env(
        broker_url=group.url,
        connections_file=connections_file,
        secrets={SECRET_ENV: DEMO_CLIENT_SECRET},
        **{**TEST_SETTINGS, "heartbeat_file": str(tmp_path / "heartbeat")},
    )
    worker = WorkerProcess(env, tmp_path / "worker.log", name="sentinel-dead").start()
    try:
        with redis.Redis.from_url(group.primary.url) as primary:
            before = primary.llen(DEAD_LETTERS)
            # Not UTF-8: kombu's own Sentinel channel dies on it ("Unrecoverable error").
            primary.lpush(QUEUE, b"\xff\xfe stray bytes")
            wait_until(
                lambda: primary.llen(DEAD_LETTERS) == before + 1,
                60,
                "the stray item to reach the dead-letter list",
                worker=worker,
            )
            newest = json.loads(primary.lindex(DEAD_LETTERS, 0) or b"{}")
        assert newest["reason"] == Reason.NOT_UTF8
        with Producer(broker_url=group.url, options=RedisOptions()) as producer:
            record = wait_for_record(producer, producer.submit(new_job()), worker=worker)
        assert record["outcome"] == "succeeded"
    finally:
        worker.stop(15)
