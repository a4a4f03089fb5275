"""`make bench`: the worker's figures against its targets, in one run of a few minutes.

Seven scenarios, each with a fresh private Redis, its own fake Halo processes (over HTTP) and
real worker processes, all on loopback, all stopped at the end whatever happens:

    costs     one worker: Halo requests per job (cold, warm, nothing to change), overhead
              latency of single jobs, then throughput and CPU per job against a bare Celery
              no-op task served by the same broker settings and concurrency (figures 1, 2, 5),
              Redis round trips, commands and CPU per happy-path job (7), and a profile of a
              third drain under py-spy (bench-profile.txt)
    budget    four workers against a fake enforcing 60/10s with a deep backlog: budget use,
              429s, and Halo requests per job when batched (figures 2, 3), and the picture of
              the run (bench-budget.png)
    burst     200 jobs on 200 tickets at once on a 300/300s budget, Halo at 100 ms: time to
              the last record and Halo requests spent (8)
    tenants   tenant A with a 2,000-job backlog on a small budget; latency of tenant B (4)
    inflight  one worker at 300 ms Halo latency: requests in flight and peak RSS (6)
    scaleout  1, 2 and 4 worker processes draining the same queue: throughput, and what bounds
              it (worker CPU, Redis CPU, the fake's CPU) (9)
    replicas  a primary and its replica: what waiting for the replica's ack adds to the writes
              that must survive a failover (10)

Prints the JSON report and a table, and writes the report to bench-report.json. Exits 0 when
every scenario ran, whatever the figures (a missed target is a finding, not a crash); 1 when a
scenario could not run (its error is in the report, the other scenarios still run).
`--quick` runs every scenario small, `--only a,b` runs some (see `--help`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from bench.report import REPORT_PATH, evaluate, print_table
from bench.rig import QUICK_ENV

SCENARIO_NAMES = ["costs", "budget", "burst", "tenants", "inflight", "scaleout", "replicas"]


def _scenarios() -> dict[str, Callable[[Path, str], dict[str, Any]]]:
    """The scenarios by name. Imported here, after `--quick` is known: their modules size
    themselves when imported (`bench.rig.sized`)."""
    from bench.budget import budget, burst, tenants  # noqa: PLC0415 - see above
    from bench.costs import costs, inflight  # noqa: PLC0415
    from bench.replicas import replicas  # noqa: PLC0415
    from bench.scale import scaleout  # noqa: PLC0415

    return {
        "costs": costs,
        "budget": budget,
        "burst": burst,
        "tenants": tenants,
        "inflight": inflight,
        "scaleout": scaleout,
        "replicas": replicas,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"every scenario at a fraction of its size (also {QUICK_ENV}=1): to try a change "
        "to the benchmark; its figures are not comparable",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated scenarios to run (default: all): " + ",".join(SCENARIO_NAMES),
    )
    args = parser.parse_args(argv)
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    scenarios = _scenarios()
    wanted = args.only.split(",") if args.only else SCENARIO_NAMES
    chosen = [(name, scenarios[name]) for name in SCENARIO_NAMES if name in wanted]
    # SIGTERM unwinds like Ctrl-C, so every process started so far is stopped on the way out.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    started = time.monotonic()
    run = uuid.uuid4().hex[:8]
    report: dict[str, Any] = {
        "run": {
            "id": run,
            "started_at": _now(),
            "cpus": os.cpu_count(),
            "quick": os.environ.get(QUICK_ENV) == "1",
            # Other load on the machine skews every figure: it is shown, not hidden.
            "load_average_1m": {},
        }
    }
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="halo-bench-") as tmp:
        root = Path(tmp)
        for name, scenario in chosen:
            print(f"[{time.monotonic() - started:6.1f} s] {name} ...", flush=True)
            report["run"]["load_average_1m"][name] = round(os.getloadavg()[0], 2)
            try:
                report.update(scenario(root, run))
            except Exception as exc:  # noqa: BLE001 - reported; the other scenarios still run.
                failed.append(name)
                report.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
                print(f"  {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    report["run"]["load_average_1m"]["end"] = round(os.getloadavg()[0], 2)
    report["run"]["duration_s"] = round(time.monotonic() - started, 1)
    report["targets"] = evaluate(report)
    text = json.dumps(report, indent=2)
    REPORT_PATH.write_text(text + "\n")
    print(text)
    print_table(report)
    return 1 if failed else 0


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    del frame
    sys.exit(128 + signum)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


if __name__ == "__main__":
    sys.exit(main())
