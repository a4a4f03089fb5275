"""The soak's memory verdict (`bench.soak.rss_growth`) states growth per 10,000 jobs."""

from __future__ import annotations

from bench.soak import rss_growth


def test_the_verdict_scales_the_worst_workers_growth_to_10000_jobs_and_says_so() -> None:
    peaks = {"soak0": {"growth_mib": 0.2}, "soak1": {"growth_mib": 0.9}}
    verdict = rss_growth(peaks, jobs=6000, warm_jobs=4000)
    assert verdict["worst_worker"] == "soak1"
    assert verdict["per_10k_jobs_mib"] == 1.5
    assert verdict["verdict"] == "MISS"
    assert verdict["statement"] == (
        "RSS growth after warm-up: +1.50 MiB per 10,000 jobs (worst worker soak1: +0.90 MiB "
        "over the 6,000 jobs the fleet ran after the first 4,000; target <= 1 MiB): MISS"
    )


def test_shrinking_workers_pass() -> None:
    verdict = rss_growth({"soak0": {"growth_mib": -0.4}}, jobs=6000, warm_jobs=4000)
    assert verdict["verdict"] == "PASS"
    assert verdict["statement"].startswith("RSS growth after warm-up: -0.67 MiB per 10,000 jobs")
