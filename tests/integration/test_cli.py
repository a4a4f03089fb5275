"""`halo-jobs`, run as a user runs it: exit codes, printed records, one-line errors."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from integration.harness import new_job, wait_for_record
from ops.processes import BIN
from producers.jobs import Producer
from worker.halo.fake import FakeHalo

pytestmark = pytest.mark.usefixtures("worker")

HaloJobs = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def halo_jobs(env_for: Callable[..., dict[str, str]]) -> HaloJobs:
    """Runs `halo-jobs ARGS...` (optionally with stdin) against the test Redis and fake."""

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "halo-jobs"), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env_for(),
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
