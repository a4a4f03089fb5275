"""Redis over TLS that verifies: real `redis-server --tls-port` processes with certificates
made by the test, a real worker (with its metrics exporter), Flower, `halo-jobs` and the
producer API.

Everything connects to a Redis whose certificate our CA signed, presenting a client
certificate (the server requires one); a Redis whose certificate another CA signed is refused
by every client, unless verification is turned off, which is then logged as a WARNING.
"""

from __future__ import annotations

import json
import logging
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from fakehalo import DEMO_CLIENT_SECRET
from producers.jobs import Producer, SubmitError
from tests.harness.processes import (
    BIN,
    FlowerProcess,
    ProcessError,
    RedisServer,
    WorkerProcess,
    free_port,
    service_env,
)
from tests.integration.certs import Issued, TestCA
from tests.integration.harness import (
    SECRET_ENV,
    TEST_SETTINGS,
    new_job,
    wait_for_record,
    wait_until,
)
from worker.metrics import redis_for_scrapes
from worker.redisconn import RedisOptions, connect

FLOWER_USER, FLOWER_PASSWORD = "ops", "tls-test-flower"
# A worker pointed at a Redis it refuses never gets ready; this long shows it keeps refusing.
REFUSING_WORKER_WAIT_S = 8.0


class TlsRedisServer(RedisServer):
    """`redis-server` listening on TLS only (``--port 0``), with `issued` as its certificate."""

    def __init__(
        self, directory: Path, ca: TestCA, issued: Issued, *, require_client_cert: bool
    ) -> None:
        port = free_port()
        super().__init__(
            directory,
            port=port,
            extra_args=[
                "--port", "0",
                "--tls-port", str(port),
                "--tls-cert-file", str(issued.cert_file),
                "--tls-key-file", str(issued.key_file),
                "--tls-ca-cert-file", str(ca.cert_file),
                "--tls-auth-clients", "yes" if require_client_cert else "no",
            ],
        )  # fmt: skip
        self.ca = ca
        self.client_options = RedisOptions()

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def answers(self) -> bool:
        try:
            with connect(
                self.url, self.client_options, socket_timeout_s=0.5, connect_timeout_s=0.5
            ) as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False


@dataclass(frozen=True)
class Pki:
    """Our CA with a server and a client certificate, and another CA with a server one."""

    ours: TestCA
    server: Issued
    client: Issued
    other: TestCA
    other_server: Issued

    def options(self, **overrides: object) -> RedisOptions:
        """What a client configured with our CA and client certificate uses."""
        fields: dict[str, object] = {
            "ca_file": str(self.ours.cert_file),
            "cert_file": str(self.client.cert_file),
            "key_file": str(self.client.key_file),
            **overrides,
        }
        return RedisOptions(**fields)  # type: ignore[arg-type]

    def settings(self) -> dict[str, str]:
        """The same, as worker settings (``HALO_REDIS_*``)."""
        return {
            "redis_ca_file": str(self.ours.cert_file),
            "redis_cert_file": str(self.client.cert_file),
            "redis_key_file": str(self.client.key_file),
        }


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ours, other = TestCA.create(directory, "ours"), TestCA.create(directory, "other")
    return Pki(
        ours,
        ours.issue("redis-server", server=True),
        ours.issue("halo-client", server=False),
        other,
        other.issue("impostor-server", server=True),
    )


@pytest.fixture(scope="module")
def tls_redis(
    pki: Pki, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsRedisServer]:
    """Redis with our CA's certificate, requiring a client certificate from our CA."""
    del redis_server  # started first: it skips (or fails in CI) without redis-server
    server = TlsRedisServer(
        tmp_path_factory.mktemp("tls-redis"), pki.ours, pki.server, require_client_cert=True
    )
    server.client_options = pki.options()
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def impostor(
    pki: Pki, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsRedisServer]:
    """Redis with a certificate from another CA (it asks no client certificate, so only the
    client's own check can refuse it)."""
    del redis_server
    server = TlsRedisServer(
        tmp_path_factory.mktemp("impostor"), pki.other, pki.other_server, require_client_cert=False
    )
    server.client_options = RedisOptions(ca_file=str(pki.other.cert_file))
    yield server.start()
    server.stop()


def tls_env(
    url: str, pki: Pki, connections_file: Path, tmp_path: Path, **settings: str
) -> dict[str, str]:
    return service_env(
        broker_url=url,
        connections_file=connections_file,
        secrets={SECRET_ENV: DEMO_CLIENT_SECRET},
        **{
            **TEST_SETTINGS,
            **pki.settings(),
            "heartbeat_file": str(tmp_path / "heartbeat"),
            **settings,
        },
    )


def scrape(port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text: str = answer.read().decode()
        return text


@pytest.mark.timeout(180)
def test_the_worker_producers_flower_and_metrics_work_over_tls_that_verifies_both_ways(
    tls_redis: TlsRedisServer, pki: Pki, connections_file: Path, tmp_path: Path
) -> None:
    metrics_port = free_port()
    env = tls_env(tls_redis.url, pki, connections_file, tmp_path, metrics_port=str(metrics_port))
    worker = WorkerProcess(env, tmp_path / "worker.log", name="tls").start()
    flower_env = {**env, "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}"}
    flower = FlowerProcess(flower_env, tmp_path / "flower.log")
    try:
        with Producer(broker_url=tls_redis.url, options=pki.options()) as producer:
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
        # (Celery's `conf` control command, which Flower sends, builds a kombu Connection just
        # to mask the URL's password, and kombu logs "insecure SSL" for it: no connection is
        # made. Only this service's warning means verification is off.)
        for process in (worker, flower):
            assert "NOT verified" not in process.log_text()
    finally:
        flower.stop(10)
        worker.stop(15)


@pytest.mark.timeout(180)
def test_a_redis_whose_certificate_another_ca_signed_is_refused_by_every_client(
    impostor: TlsRedisServer, pki: Pki, connections_file: Path, tmp_path: Path
) -> None:
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        connect(impostor.url, pki.options(), socket_timeout_s=2, connect_timeout_s=2).ping()
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        redis_for_scrapes(impostor.url, pki.options()).ping()
    with (
        Producer(broker_url=impostor.url, options=pki.options()) as producer,
        pytest.raises(SubmitError) as refused,
    ):
        producer.submit(new_job())
    assert refused.value.retryable is True

    env = tls_env(impostor.url, pki, connections_file, tmp_path)
    worker = WorkerProcess(env, tmp_path / "refusing.log", name="refusing")
    try:
        with pytest.raises(ProcessError, match="did not print"):
            worker.start(timeout_s=REFUSING_WORKER_WAIT_S)
        assert "certificate verify failed" in worker.run_text()
    finally:
        worker.stop(15)
    with connect(
        impostor.url, impostor.client_options, socket_timeout_s=2, connect_timeout_s=2
    ) as direct:
        assert direct.llen("halo") == 0, "a job reached the impostor"


@pytest.mark.timeout(120)
def test_turning_verification_off_is_explicit_and_warned_about_at_every_start(
    impostor: TlsRedisServer,
    pki: Pki,
    connections_file: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    insecure = pki.options(tls_insecure=True)
    with (
        caplog.at_level(logging.WARNING, logger="halo.redis"),
        Producer(broker_url=impostor.url, options=insecure) as producer,
    ):
        assert producer.redis.ping()
    assert "HALO_REDIS_TLS_INSECURE" in caplog.text

    env = tls_env(impostor.url, pki, connections_file, tmp_path, redis_tls_insecure="true")
    worker = WorkerProcess(env, tmp_path / "insecure.log", name="insecure").start()
    worker.stop(15)
    assert "certificates are NOT verified (HALO_REDIS_TLS_INSECURE=true)" in worker.log_text()


def test_a_client_certificate_without_its_key_is_refused_at_start(
    pki: Pki, env_for: Callable[..., dict[str, str]]
) -> None:
    env = env_for(redis_cert_file=str(pki.client.cert_file))
    done = subprocess.run(
        [str(BIN / "halo-jobs"), "result", "any-job"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "HALO_REDIS_CERT_FILE and HALO_REDIS_KEY_FILE go together" in done.stderr
