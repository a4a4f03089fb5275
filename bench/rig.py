"""The benchmark's rig: the processes of one scenario, and the fake Halo's side of it.

Every scenario gets a fresh private Redis (so "cold" means cold), its own fake Halo
processes and its own worker processes; `Rig` stops all of them on exit, whatever happened.
Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar, cast

import httpx
import redis

from bench.callsites import TracedWorkerProcess
from bench.noop import DONE_KEY
from bench.profile import ProfiledWorkerProcess
from fakehalo.seeds import plain_ticket
from producers.jobs import Producer
from tests.harness.processes import BIN, FakeHaloProcess, RedisServer, WorkerProcess, service_env
from worker.keys import RESULTS_STREAM, backlog_key, backlog_taken_key, rate_key, result_key

# A worker started to observe itself: under py-spy, or counting its Redis calls.
_Observed = TypeVar("_Observed", ProfiledWorkerProcess, TracedWorkerProcess)

SECRET_ENV = "HALO_BENCH_SECRET"  # noqa: S105 - the name of a variable, not a secret.
# The fake Halo's built-in demo credentials: not a secret of any real Halo.
CLIENT_ID, CLIENT_SECRET = "demo-client", "demo-secret"
# The first id of the tickets the benchmark adds to each fake (jobs cycle over them).
FIRST_TICKET = 100_001
# Updated only by the reference client that times the fake's own answers.
REFERENCE_TICKET = 99_999
# Fast enough that the governor never throttles: for scenarios that must not be rate limited.
# A minute's window, as real Halo budgets have (minutes): its pad (3 s) is far above the fake's
# latencies, so the governor never moves a request's entry for being late (`worker.governor`).
UNLIMITED = "1000000/60s"
# A single warm job takes milliseconds; this only bounds a run that went wrong.
RECORD_WAIT_S = 30.0
# `python -m bench --quick` (or HALO_BENCH_QUICK=1): every scenario at a fraction of its
# size, to try a change to the benchmark in a minute or two. Its figures are not comparable.
QUICK_ENV = "HALO_BENCH_QUICK"


def sized(full: int, quick: int) -> int:
    """`full`, or `quick` in a quick run."""
    return quick if os.environ.get(QUICK_ENV) == "1" else full


def _start_together(workers: Sequence[WorkerProcess]) -> None:
    """Start `workers` in parallel; raises the first start's error, if any."""
    errors: list[BaseException] = []

    def start(worker: WorkerProcess) -> None:
        try:
            worker.start()
        except BaseException as exc:  # noqa: BLE001 - raised below, in the caller's thread.
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def job(
    connection: str, ticket_id: int, tag: str, *, change: bool = True, job_id: str | None = None
) -> dict[str, Any]:
    """A bench job: status "In Progress" (the tickets' status already) and, when `change`,
    a summary unique to `tag`, so the job reads one ticket and POSTs one change."""
    body: dict[str, Any] = {
        "connection": connection,
        "ticket_id": str(ticket_id),
        "status": "In Progress",
    }
    if change:
        body["summary"] = f"bench {tag}"
    if job_id is not None:
        body["job_id"] = job_id
    return body


class Fake:
    """A fake Halo process and a client for its control endpoints and its API."""

    def __init__(self, process: FakeHaloProcess) -> None:
        self.process = process
        self.http = httpx.Client(base_url=process.url, timeout=30.0)
        self._token: str | None = None

    @property
    def url(self) -> str:
        return self.process.url

    def add_tickets(self, count: int) -> list[int]:
        """Add `count` tickets (and the reference ticket), all In Progress; returns their ids."""
        ids = [FIRST_TICKET + i for i in range(count)]
        for ticket_id in [REFERENCE_TICKET, *ids]:
            answer = self.http.post("/_fake/tickets", json=plain_ticket(ticket_id))
            answer.raise_for_status()
        return ids

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        """The fake's request log (Halo requests only), after sequence number `since`."""
        answer = self.http.get("/_fake/requests", params={"since": since})
        answer.raise_for_status()
        log: list[dict[str, Any]] = answer.json()
        return log

    def last_seq(self) -> int:
        log = self.requests()
        return int(log[-1]["seq"]) if log else 0

    def halo_time_s(self, tag: str) -> float:
        """How long the fake takes to answer what a warm job sends (one ticket read, one
        POST), timed from this process on a kept-alive connection: the "Halo time" a job's
        latency contains. Uses the reference ticket, which no job touches."""
        if self._token is None:
            answer = self.http.post(
                "/auth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "scope": "all",
                },
            )
            answer.raise_for_status()
            self._token = str(answer.json()["access_token"])
        headers = {"Authorization": f"Bearer {self._token}"}
        started = time.perf_counter()
        self.http.get(
            f"/api/Tickets/{REFERENCE_TICKET}",
            params={"includedetails": "true", "nocache": "true"},
            headers=headers,
        ).raise_for_status()
        self.http.post(
            "/api/Tickets",
            json=[{"id": REFERENCE_TICKET, "summary": f"reference {tag}"}],
            headers=headers,
        ).raise_for_status()
        return time.perf_counter() - started

    def close(self) -> None:
        self.http.close()
        self.process.stop()


class NoopWorkerProcess(WorkerProcess):
    """`celery -A bench.noop worker`: the baseline, started like the real worker."""

    def start(self, timeout_s: float = 30.0) -> Self:
        self._spawn(
            [str(BIN / "celery"), "-A", "bench.noop", "worker", "-n", f"{self.name}@%h"],
            self.env,
        )
        self._wait_for(" ready.", timeout_s)
        return self


@dataclass(frozen=True)
class ConnectionSpec:
    """One `[connections.<name>]` table of the rig's connections file."""

    name: str
    fake: Fake
    rate_limit: str


class Rig(contextlib.ExitStack):
    """One scenario's processes; leaving the `with` block stops every one of them."""

    def __init__(self, root: Path, name: str) -> None:
        super().__init__()
        self.dir = root / name
        self.redis_server = RedisServer(self.dir / "redis")
        self.redis = redis.Redis.from_url(self.redis_server.url, decode_responses=True)
        self.producer = Producer(broker_url=self.redis_server.url)
        self._fakes = 0
        self.workers: list[WorkerProcess] = []

    def __enter__(self) -> Self:
        super().__enter__()
        self.callback(self.redis_server.stop)
        self.callback(self.redis.close)
        self.callback(self.producer.close)
        try:
            self.redis_server.start()
        except BaseException:
            self.close()
            raise
        return self

    def fake(self, *args: str) -> Fake:
        """Start a fake Halo with `python -m fakehalo` arguments `args`."""
        self._fakes += 1
        process = FakeHaloProcess(self.dir / f"fake{self._fakes}.log", args=list(args))
        fake = Fake(process)
        self.callback(fake.close)
        process.start()
        return fake

    def start_workers(
        self, count: int, connections: Iterable[ConnectionSpec], *, noop: bool = False, **env: str
    ) -> list[WorkerProcess]:
        """Start `count` worker processes (the no-op baseline when `noop`), HALO_* `env`, all
        at once: they are ready within moments of each other."""
        settings = self._settings(connections, env)
        kind = NoopWorkerProcess if noop else WorkerProcess
        made = []
        for _ in range(count):
            index = len(self.workers) + 1
            worker = kind(settings, self.dir / f"worker{index}.log", name=f"bench{index}")
            self.workers.append(worker)
            self.callback(worker.stop)
            made.append(worker)
        _start_together(made)
        return made

    def start_profiled_worker(
        self, connections: Iterable[ConnectionSpec], output: Path, **env: str
    ) -> ProfiledWorkerProcess:
        """Start one worker under py-spy (`bench.profile`); its stacks go to `output`."""
        return self._start_observed(ProfiledWorkerProcess, connections, output, env)

    def start_traced_worker(
        self, connections: Iterable[ConnectionSpec], output: Path, **env: str
    ) -> TracedWorkerProcess:
        """Start one worker whose Redis calls are counted by call site into `output`
        (`bench.callsites`)."""
        return self._start_observed(TracedWorkerProcess, connections, output, env)

    def _start_observed(
        self,
        kind: type[_Observed],
        connections: Iterable[ConnectionSpec],
        output: Path,
        env: dict[str, str],
    ) -> _Observed:
        """Start one worker of `kind`, which writes what it observes to `output`."""
        index = len(self.workers) + 1
        worker = kind(
            self._settings(connections, env),
            self.dir / f"worker{index}.log",
            name=f"bench{index}",
            output=output,
        )
        self.workers.append(worker)
        self.callback(worker.stop)
        worker.start()
        return worker

    def _settings(
        self, connections: Iterable[ConnectionSpec], env: dict[str, str]
    ) -> dict[str, str]:
        path = self.dir / "connections.toml"
        path.write_text(
            "".join(
                f"[connections.{c.name}]\n"
                f'url = "{c.fake.url}"\n'
                "allow_insecure_http = true\n"  # the fake Halo serves plain http on loopback
                f'client_id = "{CLIENT_ID}"\n'
                f'client_secret_env = "{SECRET_ENV}"\n'
                f'rate_limit = "{c.rate_limit}"\n'
                for c in connections
            )
        )
        return service_env(
            broker_url=self.redis_server.url,
            connections_file=path,
            secrets={SECRET_ENV: CLIENT_SECRET},
            **env,
        )

    def stop_workers(self) -> None:
        """Stop every worker started so far (warm shutdown; their queue stays)."""
        for worker in self.workers:
            worker.stop()

    def one_at_a_time(
        self, jobs: list[dict[str, Any]], halo: Fake | None = None
    ) -> tuple[list[dict[str, Any]], list[tuple[float, float]]]:
        """Submit each job and wait for its record before the next.

        Returns:
            The records, and per job (seconds from submit to record, Halo reference seconds
            from `halo.halo_time_s` right after it, or 0 without `halo`).

        Raises:
            TimeoutError: a record did not come within RECORD_WAIT_S.
        """
        records, timings = [], []
        for index, body in enumerate(jobs):
            started = time.perf_counter()
            job_id = self.producer.submit(body)
            record = self.producer.wait(job_id, timeout_s=RECORD_WAIT_S)
            elapsed = time.perf_counter() - started
            if record is None:
                raise TimeoutError(f"no record for {job_id} within {RECORD_WAIT_S:g} s")
            records.append(record)
            timings.append((elapsed, halo.halo_time_s(str(index)) if halo else 0.0))
        return records, timings

    def backlog_size(self, connection: str) -> int:
        """Jobs of `connection` waiting in its backlog, including those being released."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(backlog_key(connection))
        pipe.zcard(backlog_taken_key(connection))
        return sum(int(n) for n in pipe.execute())

    def grants(self, connection: str) -> dict[str, float]:
        """The governor's sliding log of `connection` now: grant id -> when, as
        `time.monotonic()` (the log holds Redis's clock in ms; see `worker.governor`)."""
        offset_s = time.time() - time.monotonic()
        log = cast(
            list[tuple[str, float]],
            self.redis.zrange(rate_key(connection), 0, -1, withscores=True),
        )
        return {str(member): float(ms) / 1000 - offset_s for member, ms in log}

    def recorded(self) -> int:
        """How many records the workers have written (the completion feed's length)."""
        return int(self.redis.xlen(RESULTS_STREAM))

    def noop_done(self) -> int:
        """How many no-op tasks have run (see `bench.noop`)."""
        return int(self.redis.get(DONE_KEY) or 0)

    def records(self, job_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The records of `job_ids` that exist."""
        found = []
        for start in range(0, len(job_ids), 500):
            chunk = [result_key(j) for j in job_ids[start : start + 500]]
            found += [json.loads(raw) for raw in self.redis.mget(chunk) if raw]
        return found
