"""The benchmark's targets (issues 4 and 14) and how its report is judged and shown.

Each row names a figure of the report, the measured value, the target, and PASS or MISS.
Rows without a target give context (the two throughputs, CPU per job, cold requests). A row
whose scenario did not run (`--only`) shows no value and no verdict.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPORT_PATH = Path("bench-report.json")

# (figure, label, path into the report, comparison, target, unit); comparison None: context.
_ROWS: list[tuple[str, str, str, str | None, float, str]] = [
    ("1", "throughput, Halo jobs", "throughput.halo.jobs_per_s", None, 0, "jobs/s"),
    ("1", "throughput, no-op task", "throughput.noop.jobs_per_s", None, 0, "jobs/s"),
    ("1", "throughput ratio", "throughput.ratio", ">=", 0.5, ""),
    ("1", "CPU per job, Halo jobs", "throughput.halo.cpu_ms_per_job", None, 0, "ms"),
    ("1", "CPU per job, no-op task", "throughput.noop.cpu_ms_per_job", None, 0, "ms"),
    ("2", "requests/job, cold", "halo_requests_per_job.cold.per_job", None, 0, ""),
    ("2", "requests/job, warm", "halo_requests_per_job.warm.per_job", "<=", 2.0, ""),
    ("2", "requests/job, unchanged", "halo_requests_per_job.unchanged.per_job", "==", 1.0, ""),
    ("2", "requests/job, batched", "halo_requests_batched.per_job", "<=", 0.5, ""),
    ("3", "budget use, 4 workers", "rate_budget.utilisation", ">=", 0.9, ""),
    ("3", "429 answers", "rate_budget.http_429", "==", 0, ""),
    ("4", "tenant B p50 above Halo", "tenant_isolation.p50_above_halo_ms", None, 0, "ms"),
    ("4", "tenant B p99 above Halo", "tenant_isolation.p99_above_halo_ms", "<=", 1000, "ms"),
    ("5", "overhead p50", "overhead_latency.p50_ms", "<=", 15, "ms"),
    ("5", "overhead p99", "overhead_latency.p99_ms", "<=", 50, "ms"),
    ("6", "in flight, 1 process", "inflight.peak_in_flight", ">=", 200, ""),
    ("6", "peak RSS, 1 process", "inflight.peak_rss_mb", "<=", 300, "MB"),
    ("7", "Redis round trips/job, own", "per_job.round_trips_own", "<=", 4, ""),
    ("7", "Redis round trips/job, all", "per_job.round_trips", None, 0, ""),
    ("7", "Redis round trips/job, no-op", "per_job.round_trips_noop", None, 0, ""),
    ("7", "Redis commands/job", "per_job.redis_commands", None, 0, ""),
    ("7", "Redis CPU per job", "per_job.redis_cpu_ms", None, 0, "ms"),
    ("7", "Halo requests/job", "per_job.halo_requests", None, 0, ""),
    ("8", "burst: last record after", "burst.seconds_to_last_record", "<=", 20, "s"),
    ("8", "burst: Halo requests", "burst.halo_requests", "<=", 60, ""),
    ("9", "1 process", "scaleout.steps.1.jobs_per_s", None, 0, "jobs/s"),
    ("9", "2 processes", "scaleout.steps.2.jobs_per_s", None, 0, "jobs/s"),
    ("9", "4 processes", "scaleout.steps.4.jobs_per_s", None, 0, "jobs/s"),
    ("9", "4 processes, Redis cores busy", "scaleout.steps.4.redis_cores_busy", None, 0, ""),
    ("10", "durable writes/job, no replica ack", "replica_acks.none.per_job_ms_p50", None, 0, "ms"),
    ("10", "durable writes/job, 1 replica ack", "replica_acks.one.per_job_ms_p50", None, 0, "ms"),
    ("10", "added by the replica ack, p50", "replica_acks.added_ms_p50", None, 0, "ms"),
]

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": lambda value, target: math.isclose(value, target, abs_tol=1e-9),
}


def _lookup(report: dict[str, Any], path: str) -> Any:
    node: Any = report
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def evaluate(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure: value, target and verdict (None for context rows)."""
    rows = []
    for figure, label, path, comparison, target, unit in _ROWS:
        value = _lookup(report, path)
        verdict = None
        if comparison is not None and value is not None:
            ok = isinstance(value, int | float) and _COMPARE[comparison](value, target)
            verdict = "PASS" if ok else "MISS"
        rows.append(
            {
                "figure": figure,
                "name": label,
                "value": value,
                "unit": unit,
                "target": None if comparison is None else f"{comparison} {target:g}",
                "verdict": verdict,
            }
        )
    return rows


def print_table(report: dict[str, Any]) -> None:
    """The short table: one line per row of `report["targets"]`."""
    lines = [("#", "figure", "measured", "target", "")]
    for row in report["targets"]:
        value = row["value"]
        shown = "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
        lines.append(
            (
                row["figure"],
                row["name"],
                f"{shown} {row['unit']}".strip(),
                f"{row['target']} {row['unit']}".strip() if row["target"] else "",
                row["verdict"] or "",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    print()
    for index, line in enumerate(lines):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
    for note in _notes(report):
        print(note)
    missed = sum(1 for row in report["targets"] if row["verdict"] == "MISS")
    print(
        f"\n{missed} target(s) missed; run took {report['run']['duration_s']:g} s; "
        f"report in {REPORT_PATH}"
    )


def _notes(report: dict[str, Any]) -> list[str]:
    """What the table cannot show in a cell: what bounds each scale-out step, where the
    worker's CPU goes, and the files written beside the report."""
    notes = [""]
    steps = _lookup(report, "scaleout.steps") or {}
    for count, step in steps.items():
        notes.append(
            f"scale-out, {count} process(es): {step['jobs_per_s']:g} jobs/s, workers "
            f"{step['worker_cores_busy']:g} cores, Redis {step['redis_cores_busy']:g}, fake "
            f"{step['fake_halo_cores_busy']:g}: bound by {step['bound_by']}"
        )
    by_package = _lookup(report, "profile.own_by_package_pct")
    if by_package:
        shares = ", ".join(f"{name} {pct:g} %" for name, pct in by_package.items())
        notes.append(f"worker CPU by package (profile): {shares}")
    sites = _lookup(report, "per_job.round_trips_by_site")
    if sites:
        notes.append("Redis round trips per job by call site (Celery's delivery included):")
        notes += [f"  {n:6.2f}  {site}" for site, n in sites.items()]
    for label, path in (("profile", "profile.table"), ("picture", "rate_budget.picture")):
        if (where := _lookup(report, path)) is not None:
            notes.append(f"{label}: {where}")
    return notes if len(notes) > 1 else []
