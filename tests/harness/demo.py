"""`make demo`: the whole pipeline on one machine, against the fake Halo, in under a minute.

Uses the Redis at HALO_BROKER_URL when one answers there, else starts a private one; starts the
fake Halo and a worker; submits the three use cases of the Update Halo Ticket action and one
job that fails; prints the records as a table; stops everything it started.

    python -m tests.harness.demo [--profile current|legacy|strict]   (make demo PROFILE=legacy)

`--profile` picks the tenant the fake Halo plays (`fakehalo/profiles.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from fakehalo.profiles import DEFAULT_PROFILE, PROFILES
from producers.jobs import Producer
from tests.harness.processes import (
    FakeHaloProcess,
    RedisServer,
    WorkerProcess,
    redis_reachable,
    service_env,
)

DEMO_SECRET_ENV = "HALO_DEMO_SECRET"  # the name of a variable, not a secret
# The fake Halo's built-in demo credentials: not a secret of any real Halo.
DEMO_CLIENT = ("demo-client", "demo-secret")


def demo_jobs(run: str) -> list[dict[str, Any]]:
    """The demo's jobs; `run` makes their job ids unique to this run."""
    return [
        {
            "job_id": f"demo-{run}-close",
            "connection": "demo",
            "ticket_id": "{{custom.ticket.id}}",
            "status": "Closed",
            "result_variable": "closedTicket",
            "variables": {"custom": {"ticket": {"id": 4711}}},
            "meta": {"use_case": "close a ticket via {{custom.ticket.id}}"},
        },
        {
            "job_id": f"demo-{run}-escalate",
            "connection": "demo",
            "ticket_id": "4713",
            "priority": "High",
            "team": "Escalations",
            "result_variable": "escalated",
            "meta": {"use_case": "escalate: priority High (within the ticket's SLA), team"},
        },
        {
            "job_id": f"demo-{run}-summary",
            "connection": "demo",
            "ticket_id": "{{custom.existingTicket[0].id}}",
            "summary": "[Escalated] {{custom.existingTicket[0].summary}}",
            "result_variable": "myVariable",
            "variables": {
                "custom": {
                    "existingTicket": [{"id": 4712, "summary": "VPN drops every 10 minutes"}]
                }
            },
            "meta": {"use_case": "[Escalated] {{custom.existingTicket[0].summary}}"},
        },
        {
            "job_id": f"demo-{run}-missing",
            "connection": "demo",
            "ticket_id": "999999",
            "status": "Closed",
            "error_handling": "Stop",
            "meta": {"use_case": "a ticket that does not exist, error handling Stop"},
        },
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tests.harness.demo", description="Run the demo end to end."
    )
    parser.add_argument(
        "--profile", choices=PROFILES, default=DEFAULT_PROFILE, help="the tenant the fake plays"
    )
    profile = parser.parse_args(argv).profile
    started_s = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="halo-demo-") as tmp:
        workdir = Path(tmp)
        broker_url = os.environ.get("HALO_BROKER_URL", "redis://localhost:6379/0")
        redis_server: RedisServer | None = None
        if redis_reachable(broker_url):
            print(f"Redis: using {_redacted(broker_url)}")
        else:
            redis_server = RedisServer(workdir / "redis").start()
            broker_url = redis_server.url
            print(f"Redis: none at HALO_BROKER_URL, started a private one at {broker_url}")
        fake = FakeHaloProcess(
            workdir / "halo-fake.log", args=["--seed", "demo", "--profile", profile]
        ).start()
        print(f"Fake Halo: {fake.url} (profile {profile})")
        connections = workdir / "connections.toml"
        connections.write_text(
            "[connections.demo]\n"
            f'url = "{fake.url}"\n'
            "allow_insecure_http = true\n"  # the fake Halo serves plain http on loopback
            f'client_id = "{DEMO_CLIENT[0]}"\n'
            f'client_secret_env = "{DEMO_SECRET_ENV}"\n'
        )
        env = service_env(
            broker_url=broker_url,
            connections_file=connections,
            secrets={DEMO_SECRET_ENV: DEMO_CLIENT[1]},
            worker_concurrency="16",
        )
        worker = WorkerProcess(env, workdir / "worker.log", name="demo")
        try:
            worker.start()
            print("Worker: ready\n")
            records = _run_jobs(broker_url, demo_jobs(str(int(time.time()))))
            _print_table(records)
            _print_halo_summary(fake.url)
        finally:
            worker.stop()
            fake.stop()
            if redis_server is not None:
                redis_server.stop()
    print(
        f"\nDone in {time.monotonic() - started_s:.1f} s; everything the demo started is stopped."
    )
    failed_unexpectedly = [r for r in records if r["outcome"] != _expected(r)]
    return 1 if failed_unexpectedly else 0


def _run_jobs(broker_url: str, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with Producer(broker_url=broker_url) as producer:
        job_ids = [producer.submit(job) for job in jobs]
        records = []
        for job_id in job_ids:
            record = producer.wait(job_id, timeout_s=30)
            if record is None:
                raise SystemExit(f"demo: no record for {job_id} within 30 s")
            records.append(record)
        return records


def _expected(record: dict[str, Any]) -> str:
    return "failed" if record["job_id"].endswith("-missing") else "succeeded"


def _print_table(records: list[dict[str, Any]]) -> None:
    rows = [("job", "ticket", "outcome", "disposition", "changed / error", "Halo req.")]
    for record in records:
        ticket = record["result"][0] if record["result"] else {}
        detail = (
            ", ".join(record["changed_fields"]) or "(nothing to change)"
            if record["outcome"] == "succeeded"
            else f"{record['error']['code']}: {record['error']['message']}"
        )
        rows.append(
            (
                record["job_id"].rsplit("-", 1)[-1],
                str(ticket.get("id", "-")),
                record["outcome"],
                str(record["disposition"] or "-"),
                detail[:70],
                str(record["halo_requests"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
    print()
    for record in records:
        for name, value in record["variables"].get("custom", {}).items():
            ticket = value[0]
            print(
                f"{{{{custom.{name}[0]}}}}: id {ticket['id']}, status {ticket['status_name']!r}, "
                f"priority {ticket['priority_name']!r}, team {ticket['team_name']!r}, "
                f"summary {ticket['summary']!r}"
            )


def _print_halo_summary(url: str) -> None:
    with urllib.request.urlopen(f"{url}/_fake/requests", timeout=5) as answer:  # noqa: S310
        log = json.load(answer)
    requests = log["requests"] if isinstance(log, dict) else log
    posts = [r for r in requests if r["method"] == "POST" and r["path"].lower() == "/api/tickets"]
    print(
        f"\nFake Halo saw {len(requests)} requests: {len(posts)} ticket updates, "
        f"{sum(1 for r in requests if r['path'].lower() == '/auth/token')} token request(s), "
        "and no ticket was created."
    )


def _redacted(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


if __name__ == "__main__":
    sys.exit(main())
