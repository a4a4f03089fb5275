"""`halo-jobs`, run as a user runs it: exit codes, printed records, one-line errors."""

from __future__ import annotations

import io
import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from fakehalo import FakeHalo
from operators.bulk import submit_lines
from producers.jobs import Producer
from tests.harness.processes import BIN, free_port
from tests.integration.harness import new_job, run_job, wait_for_record

pytestmark = pytest.mark.usefixtures("worker")

HaloJobs = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def halo_jobs(env_for: Callable[..., dict[str, str]]) -> HaloJobs:
    """Runs `halo-jobs ARGS...` (optionally with stdin, and with HALO_* settings given as
    keywords) against the test Redis and fake."""

    def run(
        *args: str, stdin: str | None = None, **settings: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "halo-jobs"), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env_for(**settings),
            timeout=60,
            check=False,
        )

    return run


def job_file(tmp_path: Path, job: dict[str, Any] | str, name: str = "job.json") -> str:
    path = tmp_path / name
    path.write_text(job if isinstance(job, str) else json.dumps(job))
    return str(path)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("halo-jobs: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_submit_and_wait_prints_the_record_and_exits_0_on_success(
    halo_jobs: HaloJobs, tmp_path: Path, fake: FakeHalo
) -> None:
    job = new_job(status="Closed")

    result = halo_jobs("submit", job_file(tmp_path, job), "--wait", "30")

    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert (record["job_id"], record["outcome"]) == (job["job_id"], "succeeded")
    assert len(fake.posts()) == 1


def test_submit_and_wait_exits_1_when_the_job_failed(
    halo_jobs: HaloJobs, tmp_path: Path, fake: FakeHalo
) -> None:
    job = new_job(ticket_id="999999", error_handling="Stop")

    result = halo_jobs("submit", job_file(tmp_path, job), "--wait", "30")

    assert result.returncode == 1, result.stderr
    record = json.loads(result.stdout)
    assert record["error"]["code"] == "ticket_not_found"
    assert record["disposition"] == "stop"
    assert fake.posts() == []


def test_submit_and_wait_exits_2_with_one_line_when_the_wait_runs_out(
    halo_jobs: HaloJobs, tmp_path: Path, fake: FakeHalo, producer: Producer
) -> None:
    # Halo answers the ticket read only after 1.5 s, longer than the CLI waits.
    fake.hang_next(1, seconds=1.5, path="/api/tickets/4711", method="GET", applied=True)
    job = new_job(status="Closed")

    result = halo_jobs("submit", job_file(tmp_path, job), "--wait", "0.2")

    assert_one_line_error(result, job["job_id"], "no result record")
    # The job itself still finishes.
    assert wait_for_record(producer, job["job_id"])["outcome"] == "succeeded"


def test_submit_from_stdin_prints_the_job_id_and_result_prints_the_record(
    halo_jobs: HaloJobs, producer: Producer
) -> None:
    job = new_job(status="Closed")
    del job["job_id"]

    submitted = halo_jobs("submit", "-", stdin=json.dumps(job))
    job_id = submitted.stdout.strip()
    shown = halo_jobs("result", job_id, "--wait", "30")

    assert submitted.returncode == 0, submitted.stderr
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == wait_for_record(producer, job_id)


def test_result_of_an_unknown_job_is_a_one_line_error(halo_jobs: HaloJobs) -> None:
    result = halo_jobs("result", "it-never-submitted")

    assert_one_line_error(result, "it-never-submitted")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"connection": "acme", "ticket_id": "4711", "colour": "red"}', "colour"),
        ('{"connection": "acme"}', "ticket_id"),
        ('{"connection": "acme", "ticket_id": ', "not valid JSON"),
        ("[1, 2]", "JSON object"),
    ],
    ids=["unknown key", "missing key", "not JSON", "not an object"],
)
def test_a_bad_job_file_is_refused_with_one_line_and_exit_2(
    content: str,
    fragment: str,
    halo_jobs: HaloJobs,
    tmp_path: Path,
    redis_client: redis.Redis,
) -> None:
    result = halo_jobs("submit", job_file(tmp_path, content), "--wait", "5")

    assert_one_line_error(result, fragment)
    assert redis_client.llen("halo") == 0  # nothing was enqueued


def test_a_missing_job_file_is_refused_with_one_line_and_exit_2(
    halo_jobs: HaloJobs, tmp_path: Path
) -> None:
    result = halo_jobs("submit", str(tmp_path / "absent.json"))

    assert_one_line_error(result, "absent.json")


def test_preview_prints_the_exact_update_and_writes_nothing(
    halo_jobs: HaloJobs, tmp_path: Path, fake: FakeHalo, redis_client: redis.Redis
) -> None:
    job = new_job(
        ticket_id="{{custom.ticket.id}}",
        status="Closed",
        team="Escalations",
        variables={"custom": {"ticket": {"id": 4711}}},
    )

    result = halo_jobs("preview", job_file(tmp_path, job))

    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["ticket_id"] == 4711
    assert shown["changed_fields"] == ["status_id", "team", "team_id"]
    assert shown["request"] == {
        "method": "POST",
        "path": "/api/Tickets",
        "body": [{"id": 4711, "status_id": 9, "team": "Escalations", "team_id": 2}],
    }
    assert shown["halo_requests"] == len(fake.requests())
    assert fake.posts() == []
    assert {r.method for r in fake.requests() if r.path_lower != "/auth/token"} == {"GET"}
    assert fake.ticket(4711) == FakeHalo().ticket(4711)
    assert list(redis_client.scan_iter(match="halo:result:*")) == []
    assert redis_client.llen("halo") == 0


def test_preview_takes_its_halo_requests_from_the_connections_shared_budget(
    halo_jobs: HaloJobs, tmp_path: Path, fake: FakeHalo, redis_client: redis.Redis
) -> None:
    result = halo_jobs("preview", job_file(tmp_path, new_job(status="Closed")))

    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["halo_requests"] == len(fake.requests()) > 0
    # Every request, the token request included, is in the fleet's sliding log for acme.
    assert redis_client.zcard("halo:rate:acme") == shown["halo_requests"]
    assert shown["warnings"] == []


def test_preview_builds_its_halo_client_with_the_lookup_ttl_and_token_margin_workers_use(
    halo_jobs: HaloJobs, tmp_path: Path, fake: FakeHalo, redis_client: redis.Redis
) -> None:
    job = job_file(tmp_path, new_job(status="Closed"))

    first = halo_jobs("preview", job, lookup_ttl_s="30")

    assert first.returncode == 0, first.stderr
    lookups = list(redis_client.scan_iter(match="halo:lookup:acme:*"))
    assert lookups, "the preview cached no lookup list for the fleet"
    # Kept as long as HALO_LOOKUP_TTL_S says, not the client's default of 300 s.
    assert all(0 < redis_client.ttl(key) <= 30 for key in lookups), {
        key: redis_client.ttl(key) for key in lookups
    }

    # A margin longer than the fake's tokens live (an hour): the token the first preview cached
    # for the fleet is already due for renewal, so this preview asks Halo for a new one.
    second = halo_jobs("preview", job, token_refresh_margin_s="86400")

    assert second.returncode == 0, second.stderr
    assert len(fake.requests_to("POST", "/auth/token")) == 2


def test_preview_of_a_job_that_changes_nothing_shows_no_request(
    halo_jobs: HaloJobs, tmp_path: Path, fake: FakeHalo
) -> None:
    result = halo_jobs("preview", job_file(tmp_path, new_job(ticket_id="4714", status="Closed")))

    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert (shown["changed_fields"], shown["request"]) == ([], None)
    assert fake.posts() == []


def test_preview_of_a_job_that_would_fail_prints_the_error_and_exits_1(
    halo_jobs: HaloJobs, tmp_path: Path, fake: FakeHalo
) -> None:
    result = halo_jobs("preview", job_file(tmp_path, new_job(ticket_id="999999", status="Closed")))

    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["error"]["code"] == "ticket_not_found"
    assert fake.posts() == []


def test_submit_jsonl_enqueues_every_line_and_waits_for_all(
    halo_jobs: HaloJobs, tmp_path: Path, producer: Producer, fake: FakeHalo
) -> None:
    jobs = [new_job(ticket_id=str(t), status="Closed") for t in (4711, 4712, 4713)]
    lines = "\n".join(json.dumps(job) for job in jobs) + "\n\n"

    result = halo_jobs("submit", "--jsonl", job_file(tmp_path, lines, "jobs.jsonl"), "--wait", "30")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [job["job_id"] for job in jobs]
    assert "3 submitted, 0 refused" in result.stderr
    assert "3 succeeded, 0 failed" in result.stderr
    assert [producer.result(job["job_id"]) is not None for job in jobs] == [True] * 3
    assert len(fake.posts()) == 3


def test_submit_jsonl_names_each_refused_line_submits_the_rest_and_exits_2(
    halo_jobs: HaloJobs, tmp_path: Path, producer: Producer
) -> None:
    good = [new_job(status="Closed"), new_job(ticket_id="4712", status="Closed")]
    lines = "\n".join([json.dumps(good[0]), '{"connection": "acme"}', json.dumps(good[1])])

    result = halo_jobs("submit", "--jsonl", job_file(tmp_path, lines, "jobs.jsonl"))

    assert result.returncode == 2
    assert result.stdout.split() == [job["job_id"] for job in good]
    assert "line 2" in result.stderr
    assert "ticket_id" in result.stderr
    assert "2 submitted, 1 refused" in result.stderr
    assert "Traceback" not in result.stderr
    for job in good:
        wait_for_record(producer, job["job_id"])


def test_submit_jsonl_waits_for_a_file_of_jobs_under_one_deadline_and_sums_them_up(
    halo_jobs: HaloJobs, tmp_path: Path, producer: Producer, redis_client: redis.Redis
) -> None:
    wait_s = 5  # far longer than the 32 quick jobs take; the held ones never finish within it
    succeeding = [new_job(ticket_id=str(4711 + n % 6), status="Closed") for n in range(24)]
    missing_ticket = [new_job(ticket_id="999999", status="Closed") for _ in range(5)]
    unknown_status = [new_job(status="No Such Status") for _ in range(3)]
    # Run once already: their records exist before the command starts waiting.
    earlier = [new_job(ticket_id="4712", status="Closed") for _ in range(3)]
    for job in earlier:
        run_job(producer, job)
    # Held by "another worker" (their claims are taken), so none of them can finish meanwhile.
    held = [new_job(status="Closed") for _ in range(4)]
    for job in held:
        redis_client.set(f"halo:claim:{job['job_id']}", "held-by-the-test", px=120_000)
    jobs = [*succeeding[:12], *missing_ticket, *held[:2], *earlier, *unknown_status]
    jobs += [*succeeding[12:], *held[2:]]
    lines = [json.dumps(job) for job in jobs]
    lines.insert(20, '{"connection": "acme"}')  # refused: no ticket_id
    number = {job["job_id"]: n for n, job in enumerate(jobs, start=1)}
    number.update({job_id: n + 1 for job_id, n in number.items() if n >= 21})

    started = time.monotonic()
    result = halo_jobs(
        "submit",
        "--jsonl",
        job_file(tmp_path, "\n".join(lines), "jobs.jsonl"),
        "--wait",
        str(wait_s),
    )
    elapsed_s = time.monotonic() - started

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.split() == [job["job_id"] for job in jobs]
    # One deadline for the whole file: waiting per job would take 4 times wait_s at least.
    print(
        f"\n{len(jobs)} jobs, {len(held)} held, returned after {elapsed_s:.1f} s (--wait {wait_s})"
    )
    assert elapsed_s < len(held) * wait_s
    errors = result.stderr.splitlines()
    assert [line for line in errors if line.startswith("halo-jobs: line 21: ")] == [
        "halo-jobs: line 21: job.ticket_id: required key is missing"
    ]
    assert "39 submitted, 1 refused" in errors
    for job in held:
        line = (
            f"halo-jobs: line {number[job['job_id']]}: job {job['job_id']} not finished within 5 s"
        )
        assert line in errors
    for job in missing_ticket:
        line = (
            f"halo-jobs: line {number[job['job_id']]}: job {job['job_id']} failed: ticket_not_found"
        )
        assert line in errors
    # The summary matches the records as they stand when the command returns.
    records = {job["job_id"]: producer.result(job["job_id"]) for job in jobs}
    outcomes = Counter(r["outcome"] if r else "unfinished" for r in records.values())
    codes = Counter(r["error"]["code"] for r in records.values() if r and r["error"])
    assert (outcomes["succeeded"], outcomes["failed"], outcomes["unfinished"]) == (27, 8, 4)
    assert codes == {"ticket_not_found": 5, "lookup_not_found": 3}
    assert errors[-1] == (
        "39 jobs: 27 succeeded, 8 failed (ticket_not_found 5, lookup_not_found 3), "
        "4 not finished within 5 s; 1 line refused"
    )
    assert [records[job["job_id"]] for job in held] == [None] * len(held)
    # Nothing held is lost: let the jobs go and each ends in its record.
    redis_client.delete(*(f"halo:claim:{job['job_id']}" for job in held))
    for job in held:
        assert wait_for_record(producer, job["job_id"])["outcome"] == "succeeded"


def test_submit_jsonl_names_the_lines_not_submitted_when_the_broker_is_unreachable() -> None:
    lines = [
        (1, '{"connection": "acme"}'),
        (2, json.dumps(new_job(status="Closed"))),
        (4, json.dumps(new_job(status="Closed"))),
    ]
    out, err = io.StringIO(), io.StringIO()

    with Producer(broker_url=f"redis://127.0.0.1:{free_port()}/0") as unreachable:
        code = submit_lines(unreachable, lines, 5, out=out, err=err)

    assert code == 2
    assert out.getvalue() == ""
    errors = err.getvalue().splitlines()
    assert errors[0].startswith("halo-jobs: line 1: ")
    assert "ticket_id" in errors[0]
    assert errors[1].startswith("halo-jobs: line 2: could not enqueue job ")
    assert errors[1].endswith("submit it again later; lines 2-4 were not submitted")
    assert errors[2:] == ["0 submitted, 1 refused, 2 not submitted"]
