"""Start and stop the service's processes natively: Redis, workers, Flower, the fake Halo.

The demo, the integration tests and the benchmark run the same commands that the containers
run (`redis-server`, `celery -A worker.app worker`, `python -m fakehalo`), each on a free loopback
port, and stop everything they started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Self

import redis

BIN = Path(sys.executable).parent
# The repository root: the fake Halo is imported from here, since it is never installed.
ROOT = Path(__file__).resolve().parents[2]
# The tasks page's columns: a job's redacted arguments, when it was submitted, and its outcome
# (result for SUCCESS, exception for FAILURE and RETRY; see worker/outcomes.py). Flower's
# default shows none of them. Compose and Kubernetes set the same (FLOWER_TASKS_COLUMNS).
FLOWER_TASKS_COLUMNS = "name,uuid,state,result,exception,args,kwargs,received,runtime,worker"


class ProcessError(RuntimeError):
    """Raised when a process does not come up; the message holds the end of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_reachable(url: str, timeout_s: float = 0.5) -> bool:
    """Whether a Redis answers PING at `url`."""
    try:
        with redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        ) as r:
            return bool(r.ping())
    except (redis.RedisError, OSError):
        return False


class _Process:
    """A child process whose output goes to a log file."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        # Where this run's output starts in the log: a restart appends to the same file.
        self._run_offset = 0

    def _spawn(self, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._log is not None:
            # A restart after kill(): the killed process's log handle is still open.
            self._log.close()
        self._log = self.log_path.open("ab")
        self._run_offset = self._log.tell()
        self.proc = subprocess.Popen(  # argv is built here, never from input
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )

    def log_text(self) -> str:
        """The process's output so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def run_text(self) -> str:
        """The output of the current run only (since the last start)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._run_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def _fail(self, what: str) -> ProcessError:
        tail = "\n".join(self.log_text().splitlines()[-30:])
        return ProcessError(f"{self.name}: {what}\n--- {self.log_path} ---\n{tail}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.running and self.proc is not None:
            self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: no cleanup, like a crashed host."""
        self.signal(signal.SIGKILL)
        self.wait(10)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout_s`."""
        self.signal(signal.SIGTERM)
        if not self.wait(timeout_s):
            self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None

    def wait(self, timeout_s: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _wait_for(self, marker: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if marker in self.run_text():
                return
            if not self.running:
                raise self._fail(f"exited with {self.proc.returncode if self.proc else '?'}")
            time.sleep(0.05)
        raise self._fail(f"did not print {marker!r} within {timeout_s:g} s")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class RedisServer(_Process):
    """A private `redis-server` on a free loopback port, optionally with an AOF."""

    def __init__(
        self,
        directory: Path,
        *,
        appendonly: bool = False,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        launcher: Sequence[str] = (),
    ) -> None:
        super().__init__("redis-server", directory / "redis.log")
        self.directory = directory
        self.port = port or free_port()
        self.appendonly = appendonly
        # More redis-server options (`--replicaof`, `--tls-port`, `--aclfile`, ...).
        self.extra_args = list(extra_args)
        # A start script that runs redis-server with its options (ops/redis/data-node.sh), or
        # nothing: redis-server itself.
        self.launcher = list(launcher)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> Self:
        """Start (or restart on the same port and data directory) and wait for PING."""
        self.directory.mkdir(parents=True, exist_ok=True)
        server = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            *self.extra_args,
        ]  # fmt: skip
        self._spawn([*self.launcher, *server])
        deadline = time.monotonic() + timeout_s
        while not self.answers():
            if not self.running or time.monotonic() > deadline:
                raise self._fail("did not answer PING")
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        """Whether the server answers PING (a TLS or ACL server overrides how to ask)."""
        return redis_reachable(self.url)


class WorkerProcess(_Process):
    """`celery -A worker.app worker`, as the containers run it."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        name: str = "worker",
        extra: list[str] | None = None,
    ) -> None:
        super().__init__(name, log_path)
        self.env = env
        self.extra = extra or []

    def start(self, timeout_s: float = 30.0) -> Self:
        """Start and wait until the worker reports ready."""
        self._spawn(self.command(), self.env)
        self._wait_for(" ready.", timeout_s)
        return self

    def command(self) -> list[str]:
        """The worker's command line: `celery -A worker.app worker -n <name>@%h` and extras."""
        return [
            str(BIN / "celery"),
            "-A",
            "worker.app",
            "worker",
            "-n",
            f"{self.name}@%h",
            *self.extra,
        ]

    def restart(self, timeout_s: float = 30.0) -> Self:
        """Start again after a stop or a kill, appending to the same log."""
        self.log_path.write_text(self.log_text())
        return self.start(timeout_s)


class FakeHaloProcess(_Process):
    """The fake Halo (`python -m fakehalo`), for runs where Halo must live in its own process."""

    def __init__(
        self, log_path: Path, *, port: int | None = None, args: list[str] | None = None
    ) -> None:
        super().__init__("halo-fake", log_path)
        self.port = port or free_port()
        self.args = args or []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> Self:
        # The fake stays out of the worker's wheel: it runs from the repository's source, which
        # PYTHONPATH names so that it starts from any working directory.
        path = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
        self._spawn(
            [str(BIN / "python"), "-m", "fakehalo", "--port", str(self.port), *self.args],
            {**os.environ, "PYTHONPATH": path},
        )
        self._wait_for("listening on", timeout_s)
        return self


class FlowerProcess(_Process):
    """`celery -A worker.app flower`, bound to loopback, as the containers run it.

    Authentication comes from the environment (``FLOWER_BASIC_AUTH=user:password``); without
    it Flower 2.2 refuses its HTTP API but still serves `/metrics` and `/healthcheck`.
    """

    def __init__(self, env: Mapping[str, str], log_path: Path, *, port: int | None = None) -> None:
        super().__init__("flower", log_path)
        self.env = env
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> Self:
        """Start and wait until Flower listens."""
        self._spawn(
            [
                str(BIN / "celery"),
                "-A",
                "worker.app",
                "flower",
                f"--port={self.port}",
                "--address=127.0.0.1",
            ],
            {"FLOWER_TASKS_COLUMNS": FLOWER_TASKS_COLUMNS, **self.env},
        )
        self._wait_for("Visit me at", timeout_s)
        return self


def service_env(
    *, broker_url: str, connections_file: Path, secrets: Mapping[str, str], **settings: str
) -> dict[str, str]:
    """The environment a worker or producer runs with: this process's, plus HALO_* settings.

    Keyword arguments become ``HALO_<NAME>`` variables (``job_deadline_s="5"``).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HALO_", "SENTRY_"))}
    env.update(
        {
            "HALO_BROKER_URL": broker_url,
            "HALO_CONNECTIONS_FILE": str(connections_file),
            "PYTHONUNBUFFERED": "1",
            **secrets,
        }
    )
    env.update({f"HALO_{name.upper()}": value for name, value in settings.items()})
    return env
