"""Writes that must survive a failover wait for a replica (HALO_REDIS_MIN_REPLICAS_ACKED).

On a primary with no replica in sync, nothing that depends on those writes happens: a producer
is not told "accepted", a worker sends nothing to Halo and acks nothing. Once a replica
confirms, the job runs, once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from fakehalo import DEMO_CLIENT_SECRET, FakeHalo
from producers.jobs import Producer, SubmitError
from tests.harness.processes import RedisServer, WorkerProcess, service_env
from tests.integration.harness import (
    SECRET_ENV,
    TEST_SETTINGS,
    new_job,
    wait_for_record,
    wait_until,
)
from worker.connections import Connection
from worker.governor import Governor
from worker.keys import claim_key, job_state_key, result_key
from worker.models import Outcome, ResultRecord, utc_now_iso
from worker.ratelimit import RateLimit
from worker.replication import NotReplicated, ReplicaAcks
from worker.results import ResultStore

# Short, so a refused write comes back quickly; still far above a loopback replica's ack.
ACK_TIMEOUT_S = 0.2


@pytest.fixture
def primary(redis_server: RedisServer, tmp_path: Path) -> RedisServer:
    del redis_server  # started first: it skips (or fails in CI) without redis-server
    return RedisServer(tmp_path / "primary")


def record_of(job_id: str) -> ResultRecord:
    now = utc_now_iso()
    return ResultRecord(
        job_id=job_id, outcome=Outcome.SUCCEEDED, disposition=None, result=[], variables={},
        changed_fields=[], warnings=[], error=None, attempts=1, halo_requests=2,
        submitted_at=now, finished_at=now, meta={},
    )  # fmt: skip


def test_claims_journals_and_records_are_not_relied_on_until_a_replica_has_them(
    primary: RedisServer,
) -> None:
    primary.start()
    try:
        client = redis.Redis.from_url(primary.url, decode_responses=True)
        store = ResultStore(client, ttl_s=60, acks=ReplicaAcks(1, timeout_s=ACK_TIMEOUT_S))
        with (
            pytest.raises(NotReplicated, match="the claim of job j1 reached 0 of the 1"),
            store.claims.claim("j1", lease_s=30),
        ):
            pytest.fail("the run went ahead on a claim no replica has")
        assert client.exists(claim_key("j1")) == 0, "a refused claim was left blocking the job"
        with (
            pytest.raises(NotReplicated, match="the claim of job j3"),
            store.claims.claim("j3", lease_s=30, submitted_at=utc_now_iso()),
        ):
            pytest.fail("the run went ahead on a claim no replica has")
        assert client.exists(claim_key("j3")) == 0
        # The run it counted is taken back: the next one is not mistaken for one after a crash.
        assert client.hget(job_state_key("j3"), "attempts") == "0"
        governor = Governor(client)
        acme = Connection(
            name="acme", url="https://acme.halo.test", auth_url="https://acme.halo.test/auth",
            tenant=None, client_id="c", client_secret=SecretStr("s"), scope="all",
            rate_limit=RateLimit(300, 300.0),
        )  # fmt: skip
        with pytest.raises(NotReplicated, match="write journal"):
            governor.acquire(acme, [store.claims.journal("j3").rider(["summary"])])
        with pytest.raises(NotReplicated, match="write journal"):
            store.claims.journal("j1").note(["summary"])
        # A primary that lost its scripts (restarted, or newly promoted) is sent them again.
        client.script_flush()
        with pytest.raises(NotReplicated, match="the record of job j1"):
            store.records.write(record_of("j1"))
        assert client.exists(result_key("j1")) == 1
        plain = ResultStore(client, ttl_s=60)
        with plain.claims.claim("j2", lease_s=30) as taken:
            assert taken  # with no replica required, nothing waits
        client.close()
    finally:
        primary.stop()


@pytest.mark.timeout(120)
def test_a_worker_writes_nothing_to_halo_until_a_replica_confirms_then_runs_the_job_once(
    primary: RedisServer, fake: FakeHalo, connections_file: Path, tmp_path: Path
) -> None:
    primary.start()
    replica = RedisServer(
        tmp_path / "replica", extra_args=["--replicaof", "127.0.0.1", str(primary.port)]
    )
    env = service_env(
        broker_url=primary.url,
        connections_file=connections_file,
        secrets={SECRET_ENV: DEMO_CLIENT_SECRET},
        **{
            **TEST_SETTINGS,
            "heartbeat_file": str(tmp_path / "heartbeat"),
            "redis_min_replicas_acked": "1",
            "redis_replica_ack_timeout_s": str(ACK_TIMEOUT_S),
        },
    )
    worker = WorkerProcess(env, tmp_path / "worker.log", name="acks").start()
    job = new_job(summary="written only once a replica has the claim")
    try:
        careful = Producer(broker_url=primary.url, acks=ReplicaAcks(1, ACK_TIMEOUT_S))
        with careful, pytest.raises(SubmitError) as refused:
            careful.submit(job)
        assert refused.value.retryable is True
        assert "submit it again" in str(refused.value)

        with Producer(broker_url=primary.url) as producer:
            job_id = producer.submit(job)  # the same job again, accepted on the primary alone
            wait_until(
                lambda: worker.run_text().count("NotReplicated") >= 2,
                30,
                "the worker to hand the delivery back twice",
                worker=worker,
            )
            assert fake.posts() == [], "Halo was written on a claim no replica had"
            assert producer.result(job_id) is None

            replica.start()
            record = wait_for_record(producer, job_id, 60, worker=worker)
        assert record["outcome"] == "succeeded"
        assert record["changed_fields"] == ["summary"]
        posts = [p for p in fake.posts() if json.dumps(p.json).count(job["summary"])]
        assert len(posts) == 1
        with redis.Redis.from_url(replica.url, decode_responses=True) as copy:
            wait_until(lambda: copy.exists(result_key(job_id)) == 1, 10, "the replica's copy")
    finally:
        worker.stop(15)
        replica.stop()
        primary.stop()
