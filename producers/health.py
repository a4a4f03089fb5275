"""`halo-jobs health`: is work moving? Two checks, for two audiences.

``halo-jobs health --worker`` is the liveness probe of a worker container. Exit 0 when the
worker on this host consumed a message recently (its canary stamped the heartbeat file within
``--max-age`` seconds), still consumes the queue `halo`, and its mover (retries, backlog
releases, the lost-job scan) finished a round within ``--max-age``; 1 otherwise, with one line
saying why. It reads only the heartbeat file (``HALO_HEARTBEAT_FILE``), so it is quick and works
while Redis is down: a worker that cannot reach its broker is exactly what it must report. See
`worker.liveness`.

``halo-jobs health`` checks the fleet through Redis: jobs waiting on a queue that no worker has
consumed within ``--max-age``, retries overdue by more than that, parked jobs with no worker to
release them (`worker.fleet.stalled_work`). Exit 0 when nothing is stalled, 1 with one line per
finding, 2 when Redis cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import redis

from worker import fleet
from worker.heartbeat import check
from worker.models import QUEUE
from worker.runtime import redis_client
from worker.settings import get_settings

EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_USAGE = 0, 1, 2


def add_parser(commands: Any) -> None:
    """Register the `health` subcommand on the CLI's subparsers."""
    health = commands.add_parser(
        "health",
        help="exit 0 if work is moving (the fleet, or with --worker this host's worker)",
    )
    health.add_argument(
        "--worker",
        action="store_true",
        help="check this host's worker through its heartbeat file (HALO_HEARTBEAT_FILE)",
    )
    health.add_argument(
        "--max-age",
        type=float,
        metavar="S",
        help="oldest acceptable heartbeat, announcement or retry delay, in seconds "
        "(default HALO_HEARTBEAT_MAX_AGE_S, 180)",
    )
    health.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen check; print what it found; return the exit code."""
    settings = get_settings()
    max_age_s = settings.heartbeat_max_age_s if args.max_age is None else args.max_age
    if max_age_s <= 0:
        print("halo-jobs health: --max-age must be positive", file=sys.stderr)
        return EXIT_USAGE
    if args.worker:
        verdict = check(settings.heartbeat_file, max_age_s, home_queue=QUEUE)
        if verdict.healthy:
            print(f"healthy: {verdict.reason}")
            return EXIT_HEALTHY
        print(f"unhealthy: {verdict.reason}", file=sys.stderr)
        return EXIT_UNHEALTHY
    results = redis_client(settings.results_redis_url, settings)
    broker = (
        results
        if settings.broker_url == settings.results_redis_url
        else redis_client(settings.broker_url, settings)
    )
    try:
        findings = fleet.stalled_work(broker, results, max_age_s=max_age_s)
    except redis.RedisError as exc:
        print(
            f"halo-jobs health: cannot read the fleet's state from Redis ({type(exc).__name__})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not findings:
        print("healthy: no work is waiting where nothing moves it")
        return EXIT_HEALTHY
    for finding in findings:
        print(f"stalled: {finding}", file=sys.stderr)
    return EXIT_UNHEALTHY
