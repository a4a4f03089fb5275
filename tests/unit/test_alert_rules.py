"""The Prometheus alerting rules in ops/prometheus/alerts.yml query only what the worker exports.

A rule on a metric that no worker exposes never fires: it must fail here instead, at review.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from prometheus_client import generate_latest

from worker.metrics import RedisStateCollector, WorkerMetrics

RULES_FILE = Path(__file__).resolve().parents[2] / "ops" / "prometheus" / "alerts.yml"
# Words of PromQL (functions, keywords, template text) that are not metric names.
PROMQL_WORDS = frozenset(
    {"sum", "max", "min", "count", "avg", "rate", "irate", "increase", "absent", "by"}
    | {"without", "on", "ignoring", "and", "or", "unless", "offset", "bool"}
)


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", expr)  # label lists
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range selectors
    words = set(re.findall(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", expr))  # not 1e9
    return {word for word in words - PROMQL_WORDS if not word.startswith("__")}


def exported_names() -> set[str]:
    """Every name a worker's /metrics can carry: its instruments' samples and the Redis
    gauges the collector declares (read without contacting Redis)."""
    metrics = WorkerMetrics(["acme"])
    text = generate_latest(metrics.registry).decode()
    names = set(re.findall(r"^# TYPE (\S+)", text, re.MULTILINE))
    names |= {f"{name}_total" for name in names}  # counters are queried by their samples
    names |= {f"{name}_{part}" for name in names for part in ("bucket", "count", "sum")}
    unused = redis.Redis(host="127.0.0.1", port=1)  # describe() never connects
    collector = RedisStateCollector(unused, unused, ["acme"], Path("/nonexistent"))
    for family in collector.describe():
        # A counter family is named without `_total`; its samples carry it.
        names |= (
            {family.name, f"{family.name}_total"} if family.type == "counter" else {family.name}
        )
    return names


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: str(rule["alert"]))
def test_every_alert_queries_only_metrics_the_worker_exports(rule: dict[str, Any]) -> None:
    queried = metric_names(rule["expr"])

    assert queried, rule["expr"]
    assert queried <= exported_names(), f"not exported: {queried - exported_names()}"


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: str(rule["alert"]))
def test_every_alert_has_a_severity_a_duration_and_a_summary(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert re.fullmatch(r"\d+[smh]", rule["for"])
    assert rule["annotations"]["summary"]
    assert rule["annotations"]["description"]


def test_redis_memory_is_alerted_on_before_it_is_full() -> None:
    memory_rules = [r for r in rules() if "halo_redis_memory_used_bytes" in r["expr"]]
    thresholds = sorted(float(r["expr"].rsplit(">", 1)[1]) for r in memory_rules)

    assert thresholds
    assert thresholds[0] <= 0.8
    assert all("halo_redis_memory_max_bytes > 0" in r["expr"] for r in memory_rules)
