"""One scenario's processes: a private Redis with an append-only file, a fake Halo served from
this process, real worker processes and a producer. Leaving the `with` block stops them all.

Every test gets a fleet of its own, so a test that kills workers or restarts Redis cannot
disturb another, and leftovers (stranded messages, claims) are never inherited.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Self

import redis

from fakehalo import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, FakeHalo, serve_in_thread
from fakehalo.seeds import plain_ticket
from producers.jobs import Producer
from tests.harness.processes import RedisServer, WorkerProcess, service_env
from worker.keys import result_key
from worker.runner import _CLAIM_MARGIN_S

Job = dict[str, Any]
Record = dict[str, Any]

SECRET_ENV: Final = "HALO_ACME_SECRET"
# Tickets the tests add: one per job, far from the demo seed's ids.
FIRST_TICKET: Final = 500_000
# The governor never throttles these runs: they test delivery, not the rate budget.
UNLIMITED: Final = "100000/1s"
# Small enough that a job stranded by a SIGKILL comes back within a test, and still what the
# settings demand: visibility (8 s) > deadline (4 s) + one read timeout (2 s).
SETTINGS: Final[dict[str, str]] = {
    "visibility_timeout_s": "8",
    "job_deadline_s": "4",
    "http_read_timeout_s": "2",
    "http_connect_timeout_s": "1",
    "retry_base_s": "0.2",
    "retry_cap_s": "1",
    "retry_max_attempts": "8",
    "retry_max_total_s": "120",
    "worker_concurrency": "3",
    "result_ttl_s": "3600",
}


def summary_of(job_id: str) -> str:
    """The summary a test job writes: unique to the job, so the request log shows whose POST
    it was."""
    return f"summary written by {job_id}"


class Fleet(contextlib.ExitStack):
    """The processes of one scenario. Use as a context manager."""

    def __init__(self, root: Path, **settings: str) -> None:
        super().__init__()
        self.root = root
        self.settings = {**SETTINGS, **settings}
        self.redis_server = RedisServer(root / "redis", appendonly=True)
        self.fake = FakeHalo()
        self.workers: list[WorkerProcess] = []
        self.tickets: dict[str, int] = {}
        self.connections_file = root / "connections.toml"

    def __enter__(self) -> Self:
        super().__enter__()
        try:
            self.start_redis()
            server = serve_in_thread(self.fake)
            self.callback(server.stop)
            self.connections_file.write_text(
                "[connections.acme]\n"
                f'url = "{server.url}"\n'
                "allow_insecure_http = true\n"  # the fake Halo serves plain http on loopback
                f'client_id = "{DEMO_CLIENT_ID}"\n'
                f'client_secret_env = "{SECRET_ENV}"\n'
                f'rate_limit = "{UNLIMITED}"\n'
            )
            self.redis = self.client()
            self.callback(self.redis.close)
            self.producer = self.make_producer()
            self.callback(self.producer.close)
        except BaseException:
            self.close()
            raise
        return self

    # -- where Redis is: one server here; a subclass may run another topology ---------------

    def start_redis(self) -> None:
        """Start the fleet's Redis, stopped when the fleet is."""
        self.redis_server.start()
        self.callback(self.redis_server.stop)

    @property
    def redis_url(self) -> str:
        """The URL the workers and producers are given for Redis."""
        return self.redis_server.url

    def client(self) -> redis.Redis:
        """A new client of the fleet's Redis, for the test's own reads and writes."""
        return redis.Redis.from_url(self.redis_url, decode_responses=True, socket_timeout=10)

    def make_producer(self) -> Producer:
        """A new producer for the fleet's Redis."""
        return Producer(broker_url=self.redis_url)

    @property
    def lease_s(self) -> float:
        """How long a claim left by a dead worker blocks its job: the runner's lease, deadline
        + read timeout + its margin."""
        return (
            float(self.settings["job_deadline_s"])
            + float(self.settings["http_read_timeout_s"])
            + _CLAIM_MARGIN_S
        )

    @property
    def visibility_timeout_s(self) -> float:
        return float(self.settings["visibility_timeout_s"])

    def env(self, *, broker_url: str | None = None, **overrides: str) -> dict[str, str]:
        """A worker's environment: the fleet's settings, `overrides` on top."""
        return service_env(
            broker_url=broker_url or self.redis_url,
            connections_file=self.connections_file,
            secrets={SECRET_ENV: DEMO_CLIENT_SECRET},
            **{**self.settings, **overrides},
        )

    def worker(self, name: str, *, start: bool = True, **overrides: str) -> WorkerProcess:
        """A worker process (started unless `start` is False), stopped when the fleet is."""
        process = WorkerProcess(self.env(**overrides), self.root / f"{name}.log", name=name)
        self.workers.append(process)
        self.callback(process.stop, 15.0)
        return process.start() if start else process

    def jobs(self, tag: str, count: int) -> list[Job]:
        """`count` jobs, each with a ticket of its own and a summary of its own."""
        made = []
        for index in range(count):
            job_id = f"{tag}-{index:05d}"
            ticket_id = FIRST_TICKET + len(self.tickets)
            self.fake.add_ticket(**plain_ticket(ticket_id))
            self.tickets[job_id] = ticket_id
            made.append(
                {
                    "job_id": job_id,
                    "connection": "acme",
                    "ticket_id": str(ticket_id),
                    "summary": summary_of(job_id),
                }
            )
        return made

    def records(self, job_ids: Iterable[str]) -> dict[str, Record]:
        """The records that exist, by job_id."""
        ids = list(job_ids)
        found: dict[str, Record] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for job_id, raw in zip(
                chunk, self.redis.mget([result_key(j) for j in chunk]), strict=True
            ):
                if raw:
                    found[job_id] = json.loads(raw)
        return found

    def logs(self) -> Mapping[str, str]:
        """Every worker's log so far, by worker name."""
        return {w.name: w.log_text() for w in self.workers}
