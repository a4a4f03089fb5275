"""How big the reliability runs are: ``HALO_RELIABILITY_SCALE`` is ``ci`` (the default, what
`make test` runs) or ``full`` (for a local run before a release).

The CI sizes are reduced, not hollow: every run still kills at least ten workers mid-job,
restarts Redis under load and checks every job one by one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ENV = "HALO_RELIABILITY_SCALE"


@dataclass(frozen=True)
class Scale:
    """Sizes of one scale.

    Attributes:
        name: "ci" or "full".
        kill_jobs: jobs in the SIGKILL run.
        kills: SIGKILLs in that run, each followed by a restart.
        term_jobs: jobs in the SIGTERM run.
        stops: SIGTERMs in that run, each followed by a restart.
        outage_jobs: jobs submitted around the Redis restart.
        failover_jobs: jobs submitted around the Sentinel failover.
    """

    name: str
    kill_jobs: int
    kills: int
    term_jobs: int
    stops: int
    outage_jobs: int
    failover_jobs: int


SCALES = {
    "ci": Scale(
        "ci", kill_jobs=120, kills=10, term_jobs=120, stops=10, outage_jobs=120, failover_jobs=300
    ),
    "full": Scale(
        "full",
        kill_jobs=240,
        kills=20,
        term_jobs=240,
        stops=20,
        outage_jobs=400,
        failover_jobs=1000,
    ),
}


def current() -> Scale:
    """The scale named by ``HALO_RELIABILITY_SCALE`` (default ``ci``).

    Raises:
        ValueError: an unknown name.
    """
    name = os.environ.get(ENV, "ci").strip().lower() or "ci"
    if name not in SCALES:
        raise ValueError(f"{ENV}={name!r}: expected one of {', '.join(SCALES)}")
    return SCALES[name]


SCALE = current()
