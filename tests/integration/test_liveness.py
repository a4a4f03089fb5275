"""Liveness: the health check sees whether a worker consumes, not only whether it runs.

A worker gets its own Redis with an AOF, which the test stops and starts again on the same port
under it: while Redis is down the worker consumes nothing and `halo-jobs health --worker`
fails; once Redis is back the worker consumes again, a job submitted after the restart
completes, and the check passes again.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from producers.jobs import Producer
from tests.harness.processes import BIN, RedisServer, WorkerProcess
from tests.integration.harness import new_job, run_job, wait_until
from worker import heartbeat

CANARY_INTERVAL_S = 0.5
MAX_AGE_S = 3.0
# kombu reconnects with a growing backoff (2 s steps); Redis is down for about MAX_AGE_S.
RECOVERY_S = 40.0


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis only this test's worker uses, with an AOF so a restart keeps the queues."""
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    yield server
    server.stop()


@pytest.fixture
def probe_env(
    own_redis: RedisServer, env_for: Callable[..., dict[str, str]], tmp_path: Path
) -> dict[str, str]:
    env = env_for(
        canary_interval_s=str(CANARY_INTERVAL_S),
        heartbeat_file=str(tmp_path / "heartbeat"),
    )
    env["HALO_BROKER_URL"] = own_redis.url
    return env


def health(env: dict[str, str], max_age_s: float = MAX_AGE_S) -> subprocess.CompletedProcess[str]:
    """Run the liveness command the containers run."""
    return subprocess.run(
        [str(BIN / "halo-jobs"), "health", "--worker", "--max-age", str(max_age_s)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def answered(answers: list[subprocess.CompletedProcess[str]], env: dict[str, str]) -> int:
    """Run the health check, keep its answer, return its exit code."""
    answers.append(health(env))
    return answers[-1].returncode


def fresh(path: Path) -> bool:
    age = heartbeat.age_s(path)
    return age is not None and age < 2 * CANARY_INTERVAL_S


def test_a_worker_consumes_again_after_redis_restarts_and_the_health_check_follows(
    own_redis: RedisServer, probe_env: dict[str, str], tmp_path: Path
) -> None:
    beat = Path(probe_env["HALO_HEARTBEAT_FILE"])
    worker = WorkerProcess(probe_env, tmp_path / "worker.log", name="liveness")
    worker.start()
    try:
        with Producer(broker_url=own_redis.url) as producer:
            assert run_job(producer, new_job(status="Closed"))["outcome"] == "succeeded"
            beat.unlink()  # from now on only a canary's run can stamp it
            wait_until(lambda: fresh(beat), 10, "the first canary")
            healthy = health(probe_env)
            assert healthy.returncode == 0, healthy.stderr
            assert healthy.stdout.startswith("healthy: the worker consumed a message")

            own_redis.stop()
            # The failing answer itself is judged: asking again could meet a canary that the
            # worker took before the stop and ran only now, which stamps the heartbeat anew.
            answers: list[subprocess.CompletedProcess[str]] = []
            wait_until(lambda: answered(answers, probe_env) == 1, 20, "the check to fail")
            failed = answers[-1]
            # Alive, but not consuming: what a process check misses.
            assert worker.running, f"the worker exited:\n{worker.log_text()[-4000:]}"
            assert failed.stdout == ""
            # Either stamp can go stale first with Redis down: the canary's or the mover's.
            assert failed.stderr.startswith(
                ("unhealthy: the worker last consumed a message", "unhealthy: the worker's mover")
            ), failed.stderr
            assert failed.stderr.count("\n") == 1

            own_redis.start()
            wait_until(lambda: fresh(beat), RECOVERY_S, "a canary after the restart")
            assert health(probe_env).returncode == 0
            record = run_job(producer, new_job(ticket_id="4712", status="Closed"), RECOVERY_S)
            assert record["outcome"] == "succeeded"
    finally:
        worker.stop(timeout_s=15)


def test_the_health_check_fails_plainly_when_no_worker_ever_ran(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HALO_HEARTBEAT_FILE": str(tmp_path / "none")}

    result = health(env)

    assert result.returncode == 1
    assert result.stderr.startswith("unhealthy: no heartbeat file at")


def test_a_stale_heartbeat_fails_the_check_and_a_fresh_one_passes(tmp_path: Path) -> None:
    path = tmp_path / "beat"
    env = {"PATH": "/usr/bin:/bin", "HALO_HEARTBEAT_FILE": str(path)}
    heartbeat.stamp(path, time.time() - 60)

    assert health(env, max_age_s=30).returncode == 1
    heartbeat.stamp(path)
    assert health(env, max_age_s=30).returncode == 0
