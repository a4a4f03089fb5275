"""The worker's heartbeat file: stamped when the worker proves it consumes, read by the health
check.

The worker stamps it each time its canary task runs (see `worker.liveness`), and once at start,
which gives a starting worker one maximum age of grace. The stamp is the file's modification
time, so a health check needs neither Redis nor Celery: `halo-jobs health --worker` (and any
orchestrator probe) only reads this file. Stdlib only, so the CLI can import it cheaply.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


def stamp(path: Path, now_s: float | None = None) -> None:
    """Record "consumed just now" (Unix time `now_s`, default now). Idempotent.

    Raises:
        OSError: the file or its directory cannot be written.
    """
    path.touch(exist_ok=True)
    when = time.time() if now_s is None else now_s
    os.utime(path, (when, when))


def age_s(path: Path, now_s: float | None = None) -> float | None:
    """Seconds since the last stamp, or None when the file does not exist."""
    try:
        stamped = path.stat().st_mtime
    except FileNotFoundError:
        return None
    return max(0.0, (time.time() if now_s is None else now_s) - stamped)


@dataclass(frozen=True)
class Verdict:
    """The health check's answer: whether the worker consumed recently, and why (one line)."""

    healthy: bool
    reason: str


def check(path: Path, max_age_s: float, now_s: float | None = None) -> Verdict:
    """Whether the worker stamped `path` within `max_age_s` seconds."""
    try:
        age = age_s(path, now_s)
    except OSError as exc:
        return Verdict(False, f"cannot read the heartbeat file {path}: {exc.strerror or exc}")
    if age is None:
        return Verdict(
            False,
            f"no heartbeat file at {path}: the worker has not started, or runs with another "
            "HALO_HEARTBEAT_FILE",
        )
    if age > max_age_s:
        return Verdict(
            False,
            f"the worker last consumed a message {age:.0f} s ago (limit {max_age_s:g} s): "
            "it is not taking work from the broker",
        )
    return Verdict(True, f"the worker consumed a message {age:.1f} s ago")
