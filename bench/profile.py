"""A profile of a worker process while it drains jobs: where its CPU goes, kept beside the report.

`ProfiledWorkerProcess` starts the worker under py-spy (a sampling profiler that reads the
process from outside, so the code runs unchanged), which records the stack of the thread that
holds the GIL 100 times a second: the samples are where the process's Python CPU went.
`write_profile` turns the collapsed stacks into a sorted table (functions by own and by total
samples, and the same by package): the next person reads the hot spots without running
anything. The collapsed stacks are kept too, for a flame graph
(`flamegraph.pl`, `inferno-flamegraph` or speedscope.app read them as they are).
"""

from __future__ import annotations

import contextlib
import re
import signal
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Self

import psutil

from tests.harness.processes import BIN, WorkerProcess

# Samples per second: 100 is py-spy's default, enough for a drain of a few seconds.
SAMPLE_RATE = 100
# Lines of each table.
TOP = 30
# The project's own packages, shown apart in the table.
_PROJECT = ("worker", "producers")
# "func (path/to/file.py:123)" -> function, file.
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::\d+)?\)$")


class ProfiledWorkerProcess(WorkerProcess):
    """The worker, started under `py-spy record`; its collapsed stacks go to `output`.

    Stopping it stops the worker (not py-spy), and py-spy writes the profile when the worker
    has exited.
    """

    def __init__(self, env: Mapping[str, str], log_path: Path, *, name: str, output: Path) -> None:
        super().__init__(env, log_path, name=name)
        self.output = output

    def start(self, timeout_s: float = 30.0) -> Self:
        self._spawn(
            [
                str(BIN / "py-spy"),
                "record",
                "--rate",
                str(SAMPLE_RATE),
                # Only the thread holding the GIL: where the process's Python CPU goes.
                # (Threads blocked in a socket read would otherwise count as busy.)
                "--gil",
                "--format",
                "raw",
                "--output",
                str(self.output),
                "--",
                *self.command(),
            ],
            self.env,
        )
        self._wait_for(" ready.", timeout_s)
        return self

    def worker_pid(self) -> int | None:
        """The worker's pid (py-spy's child)."""
        if self.proc is None or not self.running:
            return None
        children = psutil.Process(self.proc.pid).children()
        return children[0].pid if children else None

    def stop(self, timeout_s: float = 30.0) -> None:
        pid = self.worker_pid()
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).send_signal(signal.SIGTERM)
            # py-spy writes the profile once the worker has gone, then exits by itself.
            self.wait(timeout_s)
        super().stop(timeout_s)


def write_profile(collapsed: Path, table: Path, title: str) -> dict[str, object]:
    """Write the sorted table of `collapsed` (py-spy's raw output) to `table`.

    Returns:
        A summary for the report: samples, and the top packages by own samples (in %).
    """
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    project: Counter[str] = Counter()
    through: Counter[str] = Counter()
    samples = startup = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";")]
        # The first frame names the thread ("process 123:"/"thread 0x..."): not code.
        frames = [f for f in frames if f[0] is not None]
        if not frames:
            continue
        if any(package == "importlib" for _, package in frames):
            startup += count  # the worker's start-up: importing its modules
            continue
        samples += count
        own[frames[-1][0] or "?"] += count
        packages[frames[-1][1]] += count
        callers = [name for name, package in frames if package in _PROJECT]
        leaf = frames[-1][1]
        if callers and leaf not in _PROJECT:
            # Library time charged to the project's step that asked for it.
            through[f"{leaf} <- {callers[-1]}"] += count
        for name, package in set(frames):
            if name is not None:
                total[name] += count
                if package in _PROJECT:
                    project[name] += count
    if samples == 0:
        table.write_text(f"{title}\n\nno samples were recorded\n")
        return {"samples": 0}

    def rows(counter: Counter[str]) -> list[str]:
        return [
            f"{n:8d} {n / samples * 100:6.1f} %  {name}" for name, n in counter.most_common(TOP)
        ]

    table.write_text(
        "\n".join(
            [
                title,
                f"{samples} samples at {SAMPLE_RATE}/s of the thread holding the GIL: a "
                "sample is 10 ms of the process's Python CPU. Start-up (imports, "
                f"{startup} samples) is left out.",
                "",
                "By package, own samples (the code running; the standard library by module):",
                *rows(packages),
                "",
                "By function, own samples:",
                *rows(own),
                "",
                "The project's functions, total samples (itself and what it called):",
                *rows(project),
                "",
                "Library code by the project's function that called it (the nearest one):",
                *rows(through),
                "",
                "By function, total samples (itself and what it called):",
                *rows(total),
                "",
            ]
        )
    )
    return {
        "samples": samples,
        "startup_samples": startup,
        "own_by_package_pct": {
            name: round(n / samples * 100, 1) for name, n in packages.most_common(8)
        },
    }


def _function(frame: str) -> tuple[str | None, str]:
    """`frame` as (function with its file, package), or (None, "") for a thread's name."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return None, ""
    path = match["file"]
    return f"{match['func']} ({path})", _package(path)


def _package(path: str) -> str:
    """The package a file belongs to, from py-spy's short paths: ``worker/runner.py`` ->
    ``worker``, ``kombu/transport/redis.py`` -> ``kombu``, ``threading.py`` -> ``threading``,
    ``<frozen importlib._bootstrap>`` -> ``importlib``."""
    if path.startswith("<frozen "):
        return path.removeprefix("<frozen ").split(".")[0].rstrip(">")
    parts = [part for part in path.split("/") if part]
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    return parts[0].removesuffix(".py") if parts else path
