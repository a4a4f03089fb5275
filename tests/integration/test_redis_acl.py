"""Least privilege in Redis: the shipped users file (`ops/redis/users.acl`) on a real Redis.

A worker and a producer run a job end to end under their own users (the producer also waits
for many records at once), operators' `halo-jobs health` and `halo-jobs dead` run under the
worker's, and Flower watches under its own, without Redis refusing any of them anything
(Redis's ACL log stays empty). A
producer's credential cannot write a record, a feed entry, a claim, the governor's budget or a
cache, not even through a Lua script; a worker's cannot run FLUSHALL, CONFIG or KEYS.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from fakehalo import DEMO_CLIENT_SECRET
from producers.jobs import Producer
from tests.harness import redis_acl
from tests.harness.processes import (
    BIN,
    FlowerProcess,
    RedisServer,
    WorkerProcess,
    redis_reachable,
    service_env,
)
from tests.integration.harness import (
    SECRET_ENV,
    TEST_SETTINGS,
    new_job,
    wait_for_record,
    wait_until,
)

FLOWER_USER, FLOWER_PASSWORD = "ops", "acl-test-flower"


class AclRedisServer(RedisServer):
    """`redis-server --aclfile`: the shipped users file, rendered with fresh passwords."""

    def __init__(self, directory: Path) -> None:
        self.passwords = {role: secrets.token_urlsafe(16) for role in redis_acl.ROLES}
        directory.mkdir(parents=True, exist_ok=True)
        acl_file = redis_acl.write(directory / "users.acl", self.passwords)
        super().__init__(directory, extra_args=["--aclfile", str(acl_file)])

    def url_for(self, role: str) -> str:
        return f"redis://{role}:{self.passwords[role]}@127.0.0.1:{self.port}/0"

    def answers(self) -> bool:
        return redis_reachable(self.url_for("admin"))


@dataclass
class Roles:
    server: AclRedisServer
    admin: redis.Redis

    def client(self, role: str) -> redis.Redis:
        return redis.Redis.from_url(self.server.url_for(role), decode_responses=True)

    def denials(self) -> list[str]:
        """Redis's ACL log: every command, key or channel a user was refused."""
        entries: list[dict[str, Any]] = self.admin.acl_log()
        return sorted(
            {f"{e['username']} {e['reason']} {e['object']!r} ({e['context']})" for e in entries}
        )


@pytest.fixture(scope="module")
def roles(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Roles]:
    del redis_server  # started first: it skips (or fails in CI) without redis-server
    server = AclRedisServer(tmp_path_factory.mktemp("acl-redis")).start()
    admin = redis.Redis.from_url(server.url_for("admin"), decode_responses=True)
    yield Roles(server, admin)
    admin.close()
    server.stop()


def role_env(
    roles: Roles, role: str, connections_file: Path, tmp_path: Path, **settings: str
) -> dict[str, str]:
    return service_env(
        broker_url=roles.server.url_for(role),
        connections_file=connections_file,
        secrets={SECRET_ENV: DEMO_CLIENT_SECRET},
        **{**TEST_SETTINGS, "heartbeat_file": str(tmp_path / "heartbeat"), **settings},
    )


@pytest.mark.timeout(180)
def test_a_worker_a_producer_and_flower_work_end_to_end_under_their_own_users(
    roles: Roles, connections_file: Path, tmp_path: Path
) -> None:
    roles.admin.acl_log_reset()
    worker = WorkerProcess(
        role_env(roles, "worker", connections_file, tmp_path), tmp_path / "worker.log", name="acl"
    ).start()
    flower_env = role_env(roles, "flower", connections_file, tmp_path)
    flower_env["FLOWER_BASIC_AUTH"] = f"{FLOWER_USER}:{FLOWER_PASSWORD}"
    flower = FlowerProcess(flower_env, tmp_path / "flower.log")
    try:
        flower.start()
        with Producer(broker_url=roles.server.url_for("producer")) as producer:
            job_id = producer.submit(new_job(summary="written under the worker's own user"))
            record = wait_for_record(producer, job_id, worker=worker)
            assert record["outcome"] == "succeeded"
            # Waiting for many reads the feed without a consumer group (XREAD).
            second = producer.submit(new_job(summary="waited for among many"))
            waited = producer.wait_many([job_id, second], 60)
            assert sorted(waited.records) == sorted([job_id, second]), waited
        producer_env = role_env(roles, "producer", connections_file, tmp_path)
        shown = subprocess.run(
            [str(BIN / "halo-jobs"), "result", job_id], env=producer_env,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        # Operators' commands run as the worker user: the fleet check and the dead letters.
        operator_env = role_env(roles, "worker", connections_file, tmp_path)
        for command in (["health"], ["dead"]):
            done = subprocess.run(
                [str(BIN / "halo-jobs"), *command], env=operator_env,
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert done.returncode == 0, (command, done.stdout, done.stderr)
        with httpx.Client(
            base_url=flower.url, auth=(FLOWER_USER, FLOWER_PASSWORD), timeout=10
        ) as api:
            try:
                wait_until(lambda: bool(api.get("/api/workers").json()), 30, "Flower's workers")
            except AssertionError as timed_out:
                raise AssertionError(f"{timed_out}; Redis refused: {roles.denials()}") from None
            queues = api.get("/api/queues/length")
            assert queues.status_code == 200, queues.text
        denied = roles.denials()
        assert not denied, "\n".join(denied)
    finally:
        flower.stop(10)
        worker.stop(15)
    denied = roles.denials()
    assert not denied, "\n".join(denied)


def refused(call: Callable[[], object]) -> bool:
    """Whether Redis refused the call for want of permission."""
    try:
        call()
    except redis.exceptions.NoPermissionError:
        return True
    except redis.ResponseError as error:
        return "NOPERM" in str(error) or "no permissions" in str(error)
    return False


def test_a_producers_credential_cannot_forge_a_record_or_touch_claims_budget_or_caches(
    roles: Roles,
) -> None:
    forged = '{"job_id": "victim", "outcome": "succeeded"}'
    with roles.client("producer") as producer:
        attempts: dict[str, Callable[[], object]] = {
            "write a record": lambda: producer.set("halo:result:victim", forged),
            "add a feed entry": lambda: producer.xadd("halo:results", {"job_id": "victim"}),
            "trim the feed": lambda: producer.xtrim("halo:results", maxlen=0),
            "write a record from Lua": lambda: producer.eval(
                "return redis.call('SET', KEYS[1], ARGV[1])", 1, "halo:result:victim", forged
            ),
            "delete a record": lambda: producer.delete("halo:result:victim"),
            "take a claim": lambda: producer.set("halo:claim:victim", "mine", nx=True, px=60000),
            "fill the rate window": lambda: producer.zadd("halo:rate:victim", {"fake": 1}),
            "set a learned limit": lambda: producer.set("halo:rate:victim:learned", "1/1000"),
            "pause every worker": lambda: producer.set("halo:rate:victim:pause", "1", ex=300),
            "poison the token cache": lambda: producer.set("halo:token:victim", "x"),
            "poison a lookup cache": lambda: producer.set("halo:lookup:victim:status", "[]"),
            "drop the queue": lambda: producer.delete("halo"),
            "steal queued jobs": lambda: producer.rpop("halo"),
            "steal queued jobs, blocking": lambda: producer.blpop(["halo"], timeout=0.1),
            "expire the feed": lambda: producer.expire("halo:results", 1),
            "read a job's state": lambda: producer.hgetall("halo:job:victim"),
            "list every key": lambda: producer.keys("*"),
            "flush everything": producer.flushall,
        }
        allowed = [what for what, attempt in attempts.items() if not refused(attempt)]
    assert allowed == []
    with roles.client("admin") as admin:
        assert admin.get("halo:result:victim") is None
        assert admin.exists("halo:claim:victim", "halo:rate:victim", "halo:token:victim") == 0


def test_a_workers_credential_has_no_keyspace_wide_or_administrative_commands(
    roles: Roles,
) -> None:
    with roles.client("worker") as worker:
        attempts: dict[str, Callable[[], object]] = {
            "FLUSHALL": worker.flushall,
            "FLUSHDB": worker.flushdb,
            "KEYS": lambda: worker.keys("*"),
            "CONFIG": lambda: worker.config_get("*"),
            "ACL": worker.acl_list,
            "a key outside the service": lambda: worker.set("someone-elses-key", "x"),
        }
        allowed = [what for what, attempt in attempts.items() if not refused(attempt)]
        assert allowed == []
        assert worker.set("halo:result:acl-probe", "{}", ex=5)


def test_the_flower_credential_reads_no_record_and_enqueues_no_job(roles: Roles) -> None:
    with roles.client("flower") as flower, roles.client("admin") as admin:
        admin.set("halo:result:flower-probe", "{}", ex=30)
        assert refused(lambda: flower.get("halo:result:flower-probe"))
        assert refused(lambda: flower.xrange("halo:results"))
        assert refused(lambda: flower.lpush("halo", "{}"))
        assert flower.llen("halo") >= 0
