"""Redis round trips by call site: which step of a job sends each request to Redis.

`python -m bench.callsites OUTPUT celery-arguments...` runs the worker (`celery ...`) with
redis-py's one sending point (`AbstractConnection.send_packed_command`: one call per command,
or per pipeline, so one per round trip) wrapped to count each call by where it came from, and
writes the counts to OUTPUT (JSON) every few milliseconds. `TracedWorkerProcess` starts a
worker that way, and `by_site` turns two readings of OUTPUT into round trips per job.

A call site is the chain of the project's innermost three functions on the stack (e.g.
``claims.Claims.claim < runner.JobRunner.admit < runner.JobRunner.run``), leaving out lambdas
and `worker.replication`, which only wraps a write with its WAIT. A call with no project
function on its stack is Celery's (delivery, acks, events) and is named by the library that
made it (``(kombu)``). Counting costs a stack walk per call: the traced drain is a run of its
own, never one whose time or CPU is reported.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, Self

from tests.harness.processes import BIN, ROOT, WorkerProcess

# How often the counts are written out: a reading is at most this old.
_WRITE_EVERY_S = 0.01
_DEPTH = 3
_PROJECT = tuple(str(ROOT / package) + os.sep for package in ("worker", "producers"))
_SKIPPED = (str(ROOT / "worker" / "replication.py"),)


def _site(frame: FrameType | None) -> str:
    """The call site of the Redis call whose stack starts at `frame`."""
    chain: list[str] = []
    library = ""
    while frame is not None and len(chain) < _DEPTH:
        path = frame.f_code.co_filename
        if path.startswith(_PROJECT):
            if path not in _SKIPPED and not frame.f_code.co_qualname.endswith("<lambda>"):
                module = Path(path).relative_to(ROOT).with_suffix("").as_posix()
                name = f"{module.removeprefix('worker/')}.{frame.f_code.co_qualname}"
                if not chain or chain[-1] != name:
                    chain.append(name)
        elif not library and "site-packages" in path:
            package = path.split("site-packages" + os.sep, 1)[1].split(os.sep, 1)[0]
            if package != "redis":
                library = package
        frame = frame.f_back
    return " < ".join(chain) if chain else f"({library or 'other'})"


def install(output: Path) -> None:
    """Count every Redis round trip of this process by call site, written to `output`."""
    from redis.connection import AbstractConnection  # noqa: PLC0415 - only in a traced worker

    counts: Counter[str] = Counter()
    lock = threading.Lock()
    send: Callable[..., None] = AbstractConnection.send_packed_command

    def counted(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        site = _site(sys._getframe(1))
        with lock:
            counts[site] += 1
        send(self, command, check_health)

    AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]

    def write_out() -> None:
        partial = output.with_suffix(".partial")
        while True:
            with lock:
                text = json.dumps(dict(counts))
            partial.write_text(text)
            partial.replace(output)
            time.sleep(_WRITE_EVERY_S)

    threading.Thread(target=write_out, name="callsites", daemon=True).start()


def read(output: Path) -> Counter[str]:
    """The counts `install` last wrote (none before its first write)."""
    try:
        return Counter(json.loads(output.read_text()))
    except (OSError, ValueError):
        return Counter()


def by_site(before: Counter[str], after: Counter[str], jobs: int) -> dict[str, float]:
    """Round trips per job by call site between two readings, most first."""
    delta = after - before
    return {site: round(n / jobs, 2) for site, n in delta.most_common() if n / jobs >= 0.005}


class TracedWorkerProcess(WorkerProcess):
    """The worker, started with its Redis calls counted by call site into `output`."""

    def __init__(self, env: Mapping[str, str], log_path: Path, *, name: str, output: Path) -> None:
        # `bench` is not installed: the worker finds it through PYTHONPATH, as the fake does.
        path = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
        super().__init__({**env, "PYTHONPATH": path}, log_path, name=name)
        self.output = output

    def start(self, timeout_s: float = 30.0) -> Self:
        self.output.unlink(missing_ok=True)
        celery = super().command()[1:]
        argv = [str(BIN / "python"), "-m", "bench.callsites", str(self.output), *celery]
        self._spawn(argv, self.env)
        self._wait_for(" ready.", timeout_s)
        return self


def main() -> None:
    """`python -m bench.callsites OUTPUT celery-arguments...`: the traced worker."""
    install(Path(sys.argv[1]))
    from celery.__main__ import main as celery  # noqa: PLC0415 - after the counting is in place

    sys.argv = ["celery", *sys.argv[2:]]
    celery()


if __name__ == "__main__":
    main()
