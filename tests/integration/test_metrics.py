"""Prometheus metrics of a real worker, the queue gauges read from Redis at scrape time, and the
Grafana dashboard that queries them."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fakehalo import FakeHalo
from producers.jobs import Producer
from tests.harness.processes import RedisServer, WorkerProcess, free_port
from tests.integration.harness import new_job, run_job, wait_until
from worker.backlog import Backlogs
from worker.deferred import DeferredJobs
from worker.metrics import RedisStateCollector
from worker.models import QUEUE

DASHBOARD = Path(__file__).parents[2] / "ops" / "grafana" / "halo-worker.json"
# Words of PromQL and Grafana that are not metric names.
PROMQL_WORDS = frozenset(
    {"sum", "max", "min", "count", "avg", "rate", "irate", "increase", "histogram_quantile"}
    | {"label_values", "by", "without", "on", "ignoring", "and", "or", "unless", "offset"}
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def metrics_url(metrics_port: int) -> str:
    return f"http://127.0.0.1:{metrics_port}/metrics"


@pytest.fixture(scope="module")
def worker_settings(metrics_port: int, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The module worker's settings: metrics on a loopback port."""
    port = str(metrics_port)
    beat = tmp_path_factory.mktemp("metrics") / "heartbeat"
    return {
        "metrics_port": port,
        "metrics_address": "127.0.0.1",
        "heartbeat_file": str(beat),
        "canary_interval_s": "0.5",
    }


def scrape_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - a loopback URL
        text: str = answer.read().decode()
        return text


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_jobs_retries_parks_and_halo_answers_are_counted_by_outcome_code_and_status(
    worker: WorkerProcess,
    producer: Producer,
    fake: FakeHalo,
    metrics_url: str,
    redis_client: redis.Redis,
) -> None:
    del worker
    before = parse(scrape_text(metrics_url))
    change = f"changed {time.time()}"  # a summary no ticket has yet: every job writes
    run_job(producer, new_job(summary=change))
    fake.fail_next(1, 403, path="/api/tickets", method="POST")
    run_job(producer, new_job(ticket_id="4712", summary=change))
    fake.fail_next(1, 503, path="/api/tickets", method="GET")
    run_job(producer, new_job(ticket_id="4713", summary=change))
    fake.fail_next(1, 429, path="/api/tickets", method="GET", retry_after=1)
    run_job(producer, new_job(ticket_id="4714", summary=change))
    # The fleet's governor pauses the connection (as after a 429): the next job waits in the
    # backlog instead of a worker slot, and is released as a batch when the pause ends.
    redis_client.set("halo:rate:acme:pause", "1", px=1500)
    run_job(producer, new_job(ticket_id="4715", summary=change))
    # A record is visible a moment before its job is counted: wait for the last count.
    jobs_before = sum(v for (name, _), v in before.items() if name == "halo_jobs_total")

    def counted() -> float:
        samples = parse(scrape_text(metrics_url))
        return sum(v for (name, _), v in samples.items() if name == "halo_jobs_total")

    wait_until(lambda: counted() - jobs_before >= 5, 5, "five jobs counted")
    after = parse(scrape_text(metrics_url))

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"outcome": "succeeded", "code": "none", "connection": "acme"}
    assert delta("halo_jobs_total", **ok) == 4
    assert delta("halo_jobs_total", outcome="failed", code="halo_forbidden", connection="acme") == 1
    assert delta("halo_job_retries_total", connection="acme", code="halo_unavailable") == 1
    assert delta("halo_job_retries_total", connection="acme", code="halo_rate_limited") == 1
    assert delta("halo_jobs_parked_total", connection="acme") == 1
    api = {"connection": "acme", "endpoint": "api"}
    assert delta("halo_requests_total", method="GET", status="429", **api) == 1
    assert delta("halo_requests_total", method="GET", status="503", **api) == 1
    assert delta("halo_requests_total", method="POST", status="403", **api) == 1
    assert delta("halo_requests_total", method="POST", status="201", **api) == 4
    assert delta("halo_job_duration_seconds_count", outcome="succeeded") == 4
    assert delta("halo_job_latency_seconds_count", outcome="failed") == 1
    assert value(after, "halo_metrics_redis_up") == 1
    assert value(after, "halo_worker_heartbeat_age_seconds") < 5


@pytest.fixture
def idle_db(redis_server: RedisServer) -> Iterator[tuple[str, redis.Redis]]:
    """A Redis database no worker consumes from: what is queued there stays."""
    url = redis_server.url.rsplit("/", 1)[0] + "/5"
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    yield url, client
    client.flushdb()
    client.close()


def iso(unix_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(unix_s))


def collect(collector: RedisStateCollector) -> Samples:
    registry = CollectorRegistry()
    registry.register(collector)
    return parse(generate_latest(registry).decode())


def test_queue_depth_waiting_jobs_and_the_oldest_jobs_age_are_read_from_redis(
    idle_db: tuple[str, redis.Redis], tmp_path: Path
) -> None:
    url, client = idle_db
    with Producer(broker_url=url) as producer:
        for _ in range(3):
            producer.submit(new_job(status="Closed"))
    now = time.time()
    Backlogs(client).park("acme", "parked-1", new_job(), iso(now - 30))
    Backlogs(client).park("elsewhere", "parked-2", new_job(), iso(now - 90))
    Backlogs(client).park("nowhere", "parked-3", new_job(), iso(now - 10))
    DeferredJobs(client).defer(
        "deferred-1",
        {"job": new_job(), "submitted_at": iso(now - 60)},
        due_s=now - 5,
        halo_requests=1,
    )

    samples = collect(RedisStateCollector(client, client, ["acme"], tmp_path / "none"))

    assert value(samples, "halo_queue_length", queue="halo") == 3
    assert value(samples, "halo_queue_length", queue="halo.batch") == 0
    assert value(samples, "halo_deferred_jobs") == 1
    assert value(samples, "halo_backlog_jobs", connection="acme") == 1
    # Unconfigured names share one label value, so a bad producer cannot grow the label set.
    assert value(samples, "halo_backlog_jobs", connection="other") == 2
    assert 0 <= value(samples, "halo_oldest_job_age_seconds", source="queue") < 30
    assert 89 <= value(samples, "halo_oldest_job_age_seconds", source="backlog") < 100
    assert 59 <= value(samples, "halo_oldest_job_age_seconds", source="deferred") < 70
    assert 4 <= value(samples, "halo_deferred_overdue_seconds") < 15
    assert value(samples, "halo_metrics_redis_up") == 1
    assert ("halo_worker_heartbeat_age_seconds", ()) not in samples


def test_a_scrape_still_answers_when_redis_is_gone(tmp_path: Path) -> None:
    gone = redis.Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5, socket_timeout=0.5
    )

    samples = collect(RedisStateCollector(gone, gone, ["acme"], tmp_path / "none"))

    assert value(samples, "halo_metrics_redis_up") == 0


@pytest.fixture
def quiet_redis(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, redis.Redis]]:
    """A private Redis with no other client (no worker), so its server-wide counters of bytes
    sent and commands run measure the scrape alone."""
    del redis_server  # requested so a missing redis-server skips (or fails in CI) as elsewhere
    server = RedisServer(tmp_path_factory.mktemp("quiet-redis")).start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    yield server.url, client
    client.close()
    server.stop()


def server_stats(client: redis.Redis) -> tuple[int, int]:
    """(bytes Redis has sent to its clients, commands it has run), from INFO stats."""
    stats = client.info("stats")
    return int(stats["total_net_output_bytes"]), int(stats["total_commands_processed"])


def test_a_huge_message_at_the_queue_head_is_never_fetched_or_decoded_by_a_scrape(
    quiet_redis: tuple[str, redis.Redis], tmp_path: Path
) -> None:
    url, client = quiet_redis
    # 50 MB at the head (what is delivered next), a real job behind it.
    client.lpush(QUEUE, json.dumps({"body": "A" * 50_000_000, "properties": {}}))
    with Producer(broker_url=url) as producer:
        producer.submit(new_job(status="Closed"))
    collector = RedisStateCollector(client, client, ["acme"], tmp_path / "none")
    sent_before, _ = server_stats(client)

    samples = collect(collector)

    sent_after, _ = server_stats(client)
    # INFO's own answer is a few KB; the scrape's reads of this database are smaller still.
    print(f"scrape with a 50 MB head: Redis sent {sent_after - sent_before} bytes")
    assert sent_after - sent_before < 64_000
    assert value(samples, "halo_queue_length", queue=QUEUE) == 2
    assert value(samples, "halo_metrics_redis_up") == 1
    # Not a message the worker would run (it refuses it on delivery), so it is not dated.
    assert value(samples, "halo_oldest_job_age_seconds", source="queue") == 0


def commands_for(collector: RedisStateCollector, scrapes: int, client: redis.Redis) -> int:
    """How many commands Redis ran for `scrapes` scrapes of `collector` (less INFO's own)."""
    registry = CollectorRegistry()
    registry.register(collector)
    _, before = server_stats(client)
    for _ in range(scrapes):
        generate_latest(registry)
    _, after = server_stats(client)
    return after - before


def test_scrapes_closer_together_than_the_read_interval_read_redis_once(
    quiet_redis: tuple[str, redis.Redis], tmp_path: Path
) -> None:
    url, client = quiet_redis
    with Producer(broker_url=url) as producer:
        producer.submit(new_job(status="Closed"))
    beat = tmp_path / "beat"

    def collector(min_interval_s: float) -> RedisStateCollector:
        return RedisStateCollector(client, client, ["acme"], beat, min_interval_s=min_interval_s)

    collect(collector(60.0))  # loads the head script, which a first call sends in full
    one_read = commands_for(collector(60.0), 1, client)
    ten_scrapes_one_read = commands_for(collector(60.0), 10, client)
    ten_reads = commands_for(collector(0.0), 10, client)

    print(
        f"commands: one read {one_read}, ten scrapes {ten_scrapes_one_read}, ten reads {ten_reads}"
    )
    assert one_read > 5
    assert ten_scrapes_one_read == one_read
    # The measure sees every read: without the interval, ten scrapes are ten reads.
    assert ten_reads - 1 >= 10 * (one_read - 1)


def test_redis_memory_use_and_its_maxmemory_are_reported_for_the_alert(
    quiet_redis: tuple[str, redis.Redis], tmp_path: Path
) -> None:
    _, client = quiet_redis
    previous = str(client.config_get("maxmemory")["maxmemory"])
    client.config_set("maxmemory", 512 * 1024 * 1024)
    try:
        samples = collect(RedisStateCollector(client, client, ["acme"], tmp_path / "none"))
        used = int(client.info("memory")["used_memory"])
    finally:
        client.config_set("maxmemory", previous)

    assert value(samples, "halo_redis_memory_max_bytes", redis="shared") == 512 * 1024 * 1024
    reported = value(samples, "halo_redis_memory_used_bytes", redis="shared")
    assert reported > 0
    assert abs(reported - used) < 1_000_000


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and variable queries."""
    queries = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    queries += [
        variable["definition"]
        for variable in dashboard["templating"]["list"]
        if variable["type"] == "query"
    ]
    return queries


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", " ", expr)  # grouping labels
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range selectors
    expr = re.sub(r",\s*\w+\s*\)", ")", expr)  # label_values(metric, label)
    words = set(re.findall(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", expr))  # not 1e9
    return {w for w in words - PROMQL_WORDS if not w.startswith("__")}


def exposed_names(text: str) -> set[str]:
    """Names a query may use: every sample name, and every family's name."""
    names = set(re.findall(r"^# TYPE (\S+)", text, re.MULTILINE))
    names |= {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1].isalpha()}
    return names


def test_the_dashboard_is_grafana_json_and_queries_only_metrics_the_worker_exposes(
    worker: WorkerProcess, metrics_url: str
) -> None:
    del worker
    dashboard = json.loads(DASHBOARD.read_text())
    exposed = exposed_names(scrape_text(metrics_url))

    assert dashboard["uid"] == "halo-worker"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "connection", "job"} <= variables
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
    queried: set[str] = set()
    for expr in dashboard_queries(dashboard):
        names = metric_names(expr)
        assert names, expr
        queried |= names
    missing = {name for name in queried if name not in exposed}
    assert not missing, f"the dashboard queries metrics the worker does not expose: {missing}"
    for wanted in ("halo_jobs_total", "halo_queue_length", "halo_oldest_job_age_seconds"):
        assert wanted in queried


def test_a_metric_family_exposed_only_after_use_is_still_declared(metrics_url: str) -> None:
    # Counters with labels have no samples until first used; their HELP and TYPE lines are
    # there from the start, so a dashboard's queries resolve on a fresh worker.
    text = scrape_text(metrics_url)

    assert "# TYPE halo_jobs_parked_total counter" in text
    assert "# TYPE halo_request_duration_seconds histogram" in text
    wait_until(lambda: "halo_worker_heartbeat_age_seconds " in scrape_text(metrics_url), 5, "hb")
