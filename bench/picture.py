"""The budget run as a picture, written beside the report: bench-budget.png.

Left: how long the run's jobs took from submission to record (most of it waiting in the
backlog for budget), as a histogram with the median and p99 marked. Right: the share of the
Halo budget in use over time, counted as Halo counts it (requests that arrived in the last
window, 429s excluded), with the 100 % line, the backlog's size on a second axis, and a mark
for each 429.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from bench.measure import percentile

# Wide enough for two panels side by side; 100 dpi keeps the file small.
SIZE_IN = (12.0, 4.5)
DPI = 100


def budget_picture(
    path: Path,
    *,
    title: str,
    latencies_s: Sequence[float],
    use: Sequence[tuple[float, float]],
    backlog: Sequence[tuple[float, int]],
    refused_at_s: Sequence[float],
) -> None:
    """Draw the budget run to `path` (PNG).

    Args:
        title: the run in a line (limit, workers, jobs).
        latencies_s: each job's submission-to-record time.
        use: (seconds since the run began, share of the budget in use, 1.0 = all of it).
        backlog: (seconds since the run began, jobs waiting in the backlog).
        refused_at_s: when Halo answered 429 (seconds since the run began).
    """
    figure = Figure(figsize=SIZE_IN, dpi=DPI, layout="constrained")
    figure.suptitle(title)
    left, right = figure.subplots(1, 2)

    left.hist(list(latencies_s), bins=40, color="tab:blue")
    for p, style in ((50, "--"), (99, ":")):
        value = percentile(latencies_s, p)
        left.axvline(value, color="black", linestyle=style, label=f"p{p} {value:.1f} s")
    left.set_xlabel("submission to record (s)")
    left.set_ylabel("jobs")
    left.set_title("Job latency")
    left.legend()

    right.plot([t for t, _ in use], [u * 100 for _, u in use], color="tab:green", label="in use")
    right.axhline(100, color="tab:red", linewidth=1, label="Halo's limit")
    for at in refused_at_s:
        right.axvline(at, color="tab:red", alpha=0.6)
    right.set_ylim(0, 115)
    right.set_xlabel("time since the first job (s)")
    right.set_ylabel("budget in use over the last window (%)")
    right.set_title(f"Budget use ({len(refused_at_s)} answers 429)")
    waiting = right.twinx()
    waiting.plot([t for t, _ in backlog], [n for _, n in backlog], color="tab:gray", alpha=0.5)
    waiting.set_ylabel("jobs in the backlog", color="tab:gray")
    right.legend(loc="lower right")
    figure.savefig(path)
