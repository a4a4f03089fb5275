"""`halo-jobs health --worker`: the liveness probe of a worker container.

Exit 0 when the worker on this host consumed a message recently (its canary stamped the
heartbeat file within ``--max-age`` seconds), 1 otherwise, with one line saying why. It reads
only the heartbeat file (``HALO_HEARTBEAT_FILE``), so it is quick and works while Redis is
down: a worker that cannot reach its broker is exactly what it must report. See
`worker.liveness`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from worker.heartbeat import check
from worker.settings import get_settings

EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_USAGE = 0, 1, 2


def add_parser(commands: Any) -> None:
    """Register the `health` subcommand on the CLI's subparsers."""
    health = commands.add_parser(
        "health", help="exit 0 if this host's worker consumed recently, 1 if not"
    )
    health.add_argument(
        "--worker",
        action="store_true",
        help="check the worker's heartbeat file (HALO_HEARTBEAT_FILE)",
    )
    health.add_argument(
        "--max-age",
        type=float,
        metavar="S",
        help="oldest acceptable heartbeat, in seconds (default HALO_HEARTBEAT_MAX_AGE_S, 180)",
    )
    health.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Check the worker's heartbeat; print one line; return the exit code."""
    if not args.worker:
        print("halo-jobs health: say what to check: --worker", file=sys.stderr)
        return EXIT_USAGE
    settings = get_settings()
    max_age_s = settings.heartbeat_max_age_s if args.max_age is None else args.max_age
    if max_age_s <= 0:
        print("halo-jobs health: --max-age must be positive", file=sys.stderr)
        return EXIT_USAGE
    verdict = check(settings.heartbeat_file, max_age_s)
    if verdict.healthy:
        print(f"healthy: {verdict.reason}")
        return EXIT_HEALTHY
    print(f"unhealthy: {verdict.reason}", file=sys.stderr)
    return EXIT_UNHEALTHY
