"""The worker's heartbeat file: stamped when the worker proves it consumes, read by the health
check.

The worker stamps it each time its canary task runs (see `worker.liveness`), and once at start,
which gives a starting worker one maximum age of grace. The stamp is the file's modification
time, so a health check needs neither Redis nor Celery: `halo-jobs health --worker` (and any
orchestrator probe) only reads this file. Stdlib only, so the CLI can import it cheaply.

The file's content says what the stamp cannot: the queues the worker consumes at that moment
(a consumer cancelled at run time, by Flower or `celery control`, no longer takes jobs although
canaries still arrive on the worker's own queue) and how long ago its background mover (retries,
backlog releases, the lost-job scan) finished a round. An empty file, as a starting worker or
an older release writes, claims neither.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Detail:
    """What the worker reports beside the stamp."""

    queues: Sequence[str]
    mover_age_s: float | None  # None: the mover has not finished a round yet


def stamp(path: Path, now_s: float | None = None, detail: Detail | None = None) -> None:
    """Record "consumed just now" (Unix time `now_s`, default now), with `detail` as the
    file's content when given. Idempotent.

    Raises:
        OSError: the file or its directory cannot be written.
    """
    if detail is None:
        path.touch(exist_ok=True)
    else:
        # Written aside and renamed, so a reader never sees half a file.
        content = {"queues": list(detail.queues), "mover_age_s": detail.mover_age_s}
        partial = path.with_name(path.name + ".tmp")
        partial.write_text(json.dumps(content))
        partial.replace(path)
    when = time.time() if now_s is None else now_s
    os.utime(path, (when, when))


def read_detail(path: Path) -> Detail | None:
    """The detail of the last stamp, or None when it carried none (or cannot be read)."""
    try:
        content = json.loads(path.read_text() or "null")
        queues = [str(q) for q in content["queues"]]
        mover = content["mover_age_s"]
        return Detail(queues, None if mover is None else float(mover))
    except (OSError, ValueError, KeyError, TypeError):
        return None


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


def check(
    path: Path, max_age_s: float, now_s: float | None = None, *, home_queue: str | None = None
) -> Verdict:
    """Whether the worker stamped `path` within `max_age_s` seconds, consuming `home_queue`
    (when given) and with a mover that finished a round within `max_age_s`."""
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
    detail = read_detail(path)
    if detail is not None and home_queue is not None and home_queue not in detail.queues:
        shown = ", ".join(detail.queues) or "nothing"
        return Verdict(
            False,
            f"the worker no longer consumes the queue {home_queue!r} (it consumes {shown}): "
            "its consumer was cancelled; restart it",
        )
    if detail is not None and detail.mover_age_s is not None and detail.mover_age_s > max_age_s:
        return Verdict(
            False,
            f"the worker's mover last finished a round {detail.mover_age_s:.0f} s ago (limit "
            f"{max_age_s:g} s): retries and parked jobs are not being released",
        )
    return Verdict(True, f"the worker consumed a message {age:.1f} s ago")
