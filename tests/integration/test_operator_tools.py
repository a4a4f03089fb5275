"""The operator's tools, end to end: `halo-jobs replay` against records a real worker wrote, and
`halo-jobs doctor` against the fake Halo over HTTP and the private Redis.

The CLI runs in this process (`operators.cli.main`) with the environment a worker has; replayed
jobs are run by the module's real worker, and their records checked.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from fakehalo import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, FakeHalo
from operators.cli import main
from producers.jobs import Producer
from tests.harness.processes import RedisServer, free_port
from tests.integration.harness import SECRET_ENV, new_job, run_job, wait_for_record
from worker.connections import load_connections
from worker.keys import failed_job_key, result_key
from worker.learned import Learned
from worker.models import QUEUE, TASK_NAME, utc_now_iso
from worker.settings import get_settings

Record = dict[str, Any]
Cli = Callable[..., tuple[int, str, str]]
HALO_LIMIT_TEXT = "Rate Limit Reached - 100 Requests per rolling 5 minute window"


@pytest.fixture
def set_env(
    monkeypatch: pytest.MonkeyPatch, env_for: Callable[..., dict[str, str]]
) -> Iterator[Callable[..., None]]:
    """Gives this process a worker's HALO_* environment (overridable) and re-reads settings."""

    def apply(**settings: str) -> None:
        for key, value in env_for(**settings).items():
            if key.startswith("HALO_"):
                monkeypatch.setenv(key, value)
        get_settings.cache_clear()

    apply()
    yield apply
    get_settings.cache_clear()


@pytest.fixture
def cli(set_env: Callable[..., None], capsys: pytest.CaptureFixture[str]) -> Cli:
    """Runs `halo-jobs ARGS...` in this process; returns (exit code, stdout, stderr)."""
    del set_env

    def run(*argv: str) -> tuple[int, str, str]:
        get_settings.cache_clear()
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="module")
def raw_celery(redis_server: RedisServer) -> Iterator[Celery]:
    """Publishes what it is given, with no producer-side validation (for invalid jobs)."""
    app = Celery("raw-publisher", broker=redis_server.url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    yield app
    app.close()


def run_invalid_job(raw_celery: Celery, producer: Producer) -> Record:
    task_id = f"raw-{uuid.uuid4()}"
    job = {"connection": "acme", "summary": "no ticket id"}
    raw_celery.send_task(TASK_NAME, args=[job], task_id=task_id, queue=QUEUE)
    return wait_for_record(producer, task_id)


def listed(cli: Cli, *filters: str) -> list[str]:
    """The job ids `replay --json` lists, newest first."""
    code, out, err = cli("replay", "--json", *filters)
    assert (code, err) == (0, ""), err
    return [job["job_id"] for job in json.loads(out)]


class Terminal(io.StringIO):
    """Standard input as a terminal where the operator types `answer`."""

    def isatty(self) -> bool:
        return True


# -- replay -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("worker")
def test_replay_lists_only_failed_jobs_newest_first_and_marks_invalid_ones_not_replayable(
    cli: Cli, producer: Producer, raw_celery: Celery, redis_client: redis.Redis
) -> None:
    succeeded = run_job(producer, new_job())
    missing = run_job(producer, new_job(ticket_id="999999"))
    unknown_status = run_job(producer, new_job(status="On Hold"))
    invalid = run_invalid_job(raw_celery, producer)
    assert succeeded["outcome"] == "succeeded"
    assert invalid["error"]["code"] == "invalid_job"

    code, out, err = cli("replay")

    assert (code, err) == (0, "")
    lines = out.splitlines()
    header = ["JOB", "ID", "FINISHED", "(UTC)", "CONNECTION", "CODE", "REPLAY", "MESSAGE"]
    assert lines[0].split() == header
    rows = lines[1:4]
    assert [row.split()[0] for row in rows] == [
        invalid["job_id"],
        unknown_status["job_id"],
        missing["job_id"],
    ]
    assert "invalid_job" in rows[0]
    assert "no (invalid job)" in rows[0]
    assert rows[2].split()[1:5] == [missing["finished_at"], "acme", "ticket_not_found", "yes"]
    assert succeeded["job_id"] not in out
    assert lines[4] == "3 failed job(s), newest first"

    shown = {job["job_id"]: job for job in json.loads(cli("replay", "--json")[1])}
    assert set(shown) == {invalid["job_id"], unknown_status["job_id"], missing["job_id"]}
    assert shown[missing["job_id"]]["replayable"] is True
    assert shown[missing["job_id"]]["connection"] == "acme"
    assert shown[missing["job_id"]]["message"] == missing["error"]["message"]
    assert shown[invalid["job_id"]]["replayable"] is False
    assert shown[invalid["job_id"]]["connection"] == "acme"
    # What is kept for replay: the job of a failed record, for exactly as long as the record.
    kept = json.loads(str(redis_client.hget(failed_job_key(missing["job_id"]), "job")))
    assert kept["ticket_id"] == "999999"
    record_ttl_s = int(redis_client.ttl(result_key(missing["job_id"])))
    assert abs(int(redis_client.ttl(failed_job_key(missing["job_id"]))) - record_ttl_s) <= 2
    assert not redis_client.hexists(failed_job_key(invalid["job_id"]), "job")
    assert not redis_client.exists(failed_job_key(succeeded["job_id"]))


@pytest.mark.usefixtures("worker")
def test_replay_filters_by_code_connection_time_and_limit(cli: Cli, producer: Producer) -> None:
    missing = run_job(producer, new_job(ticket_id="999999"))["job_id"]
    # Times are kept to the millisecond, and a record can be seen within the millisecond it
    # was finished: `between` must fall strictly between the two jobs' times.
    time.sleep(0.01)
    between = utc_now_iso()
    time.sleep(0.01)
    unknown_status = run_job(producer, new_job(status="On Hold"))["job_id"]
    elsewhere = run_job(producer, new_job(connection="globex"))["job_id"]

    assert listed(cli) == [elsewhere, unknown_status, missing]
    assert listed(cli, "--code", "ticket_not_found") == [missing]
    assert listed(cli, "--code", "ticket_not_found", "--code", "unknown_connection") == [
        elsewhere,
        missing,
    ]
    assert listed(cli, "--connection", "globex") == [elsewhere]
    assert listed(cli, "--connection", "acme") == [unknown_status, missing]
    assert listed(cli, "--since", between) == [elsewhere, unknown_status]
    assert listed(cli, "--until", between) == [missing]
    assert listed(cli, "--since", "1h") == [elsewhere, unknown_status, missing]
    assert listed(cli, "--until", "1h") == []
    assert listed(cli, "--limit", "1") == [elsewhere]
    assert listed(cli, "--connection", "acme", "--limit", "1") == [unknown_status]


def test_replay_refuses_bad_filters_as_usage_errors(
    cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["--since", "yesterday"], ["--code", "no_such_code"], ["--limit", "0"]):
        with pytest.raises(SystemExit) as exited:
            cli("replay", *argv)
        assert exited.value.code == 2
    capsys.readouterr()

    code, _, err = cli("replay", "--since", "1h", "--until", "2h")

    assert code == 2
    assert err == "halo-jobs: replay: --since is later than --until: nothing can match\n"


@pytest.mark.usefixtures("worker")
def test_replay_refuses_to_resubmit_without_yes_when_stdin_is_not_a_terminal(
    cli: Cli, producer: Producer, redis_client: redis.Redis
) -> None:
    missing = run_job(producer, new_job(ticket_id="999999"))["job_id"]

    for argv in (["--resubmit"], ["--job-id", missing]):
        code, out, err = cli("replay", *argv)

        assert code == 2
        assert missing in out  # what would have been resubmitted is shown
        assert "standard input is not a terminal; add --yes" in err
        assert "Traceback" not in err
    assert redis_client.hget(failed_job_key(missing), "replays") is None
    assert not redis_client.exists(result_key(f"{missing}:replay-1"))


@pytest.mark.usefixtures("worker")
def test_a_replay_is_a_new_job_linked_to_the_original_that_succeeds_once_the_cause_is_fixed(
    cli: Cli, producer: Producer, fake: FakeHalo, redis_client: redis.Redis
) -> None:
    meta = {"message_id": "<abc@mail>", "rule_id": "r-17"}
    original = run_job(producer, new_job(status="On Hold", meta=meta, result_variable="t"))
    assert original["error"]["code"] == "lookup_not_found"
    fake.set_lookup("status", [*fake.lookup("status"), {"id": 12, "name": "On Hold"}])
    job_id = original["job_id"]

    code, out, err = cli("replay", "--job-id", job_id, "--yes")

    assert code == 0
    assert out.splitlines()[1].startswith(f"{job_id}  ")  # the table of what is resubmitted
    assert out.splitlines()[-1] == f"resubmitted {job_id} as {job_id}:replay-1"
    assert err == "halo-jobs: replay: 1 resubmitted, 0 not\n"
    replayed = wait_for_record(producer, f"{job_id}:replay-1")
    assert replayed["outcome"] == "succeeded"
    assert replayed["changed_fields"] == ["status_id"]
    assert replayed["result"][0]["status_name"] == "On Hold"
    assert replayed["variables"]["custom"]["t"][0]["id"] == 4711
    assert replayed["meta"] == {**meta, "replay_of": job_id, "replay_count": 1}
    assert (fake.ticket(4711) or {}).get("status_id") == 12
    # The original stays as it was, now counted as replayed once; the replay left no payload.
    assert json.loads(str(redis_client.get(result_key(job_id)))) == original
    assert not redis_client.exists(failed_job_key(f"{job_id}:replay-1"))
    [shown] = json.loads(cli("replay", "--json")[1])
    assert (shown["job_id"], shown["replays"]) == (job_id, 1)
    assert "yes (1 done)" in cli("replay")[1]

    code, out, _ = cli("replay", "--job-id", job_id, "--yes")

    assert (code, out.splitlines()[-1]) == (0, f"resubmitted {job_id} as {job_id}:replay-2")
    assert wait_for_record(producer, f"{job_id}:replay-2")["meta"]["replay_count"] == 2


@pytest.mark.usefixtures("worker")
def test_replay_asks_on_a_terminal_and_resubmits_only_on_yes(
    cli: Cli,
    producer: Producer,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
) -> None:
    job_id = run_job(producer, new_job(ticket_id="999999", meta={"rule_id": "r-9"}))["job_id"]

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    code, _, err = cli("replay", "--resubmit")

    assert code == 1
    assert "Resubmit 1 failed job(s) as new jobs? [y/N] " in err
    assert "nothing resubmitted" in err
    assert redis_client.hget(failed_job_key(job_id), "replays") is None

    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    code, out, _ = cli("replay", "--resubmit", "--code", "ticket_not_found")

    assert code == 0
    assert f"resubmitted {job_id} as {job_id}:replay-1" in out
    # The cause is not fixed: the replay fails too, and is itself listed and replayable.
    replayed = wait_for_record(producer, f"{job_id}:replay-1")
    assert replayed["error"]["code"] == "ticket_not_found"
    assert replayed["meta"] == {"rule_id": "r-9", "replay_of": job_id, "replay_count": 1}
    assert listed(cli) == [f"{job_id}:replay-1", job_id]


@pytest.mark.usefixtures("worker")
def test_replay_says_why_a_chosen_job_cannot_be_resubmitted_and_exits_1(
    cli: Cli, producer: Producer, raw_celery: Celery
) -> None:
    invalid = run_invalid_job(raw_celery, producer)["job_id"]
    succeeded = run_job(producer, new_job())["job_id"]
    missing = run_job(producer, new_job(ticket_id="999999"))["job_id"]

    code, out, err = cli(
        "replay", "--yes", "--job-id", invalid, "--job-id", succeeded, "--job-id", "nope",
        "--job-id", missing, "--code", "invalid_job",
    )  # fmt: skip

    assert code == 1
    assert f"{invalid} is not replayable: the job was invalid" in err
    assert f"{succeeded} succeeded: only failed jobs are replayed" in err
    assert "nope has no record (never finished, or expired)" in err
    assert f"{missing} does not match the filters given" in err
    assert "resubmitted" not in out
    assert "Traceback" not in err


@pytest.mark.usefixtures("worker")
def test_a_long_job_id_is_replayed_under_a_hashed_id_that_fits_the_job_id_format(
    cli: Cli, producer: Producer
) -> None:
    long_id = "rule-" + "x" * 123
    run_job(producer, new_job(job_id=long_id, ticket_id="999999"))

    code, out, _ = cli("replay", "--job-id", long_id, "--yes")

    assert code == 0
    new_id = out.splitlines()[-1].split(" as ")[1]
    assert len(new_id) <= 128
    assert new_id.endswith(":replay-1")
    assert new_id.startswith("rule-xxx")
    assert wait_for_record(producer, new_id)["meta"]["replay_of"] == long_id


# -- doctor -----------------------------------------------------------------------------------


def lines_of(out: str) -> dict[str, str]:
    """The report's check lines by check name: {"token": "ok   token       issued ..."}."""
    statuses = ("ok", "FAIL", "warn", "skip")
    return {line[5:16].strip(): line for line in out.splitlines() if line[:4].strip() in statuses}


def test_doctor_passes_every_check_against_the_fake_and_counts_its_requests_in_the_budget(
    cli: Cli, fake: FakeHalo, redis_client: redis.Redis, connections_file: Path
) -> None:
    code, out, err = cli("doctor", "acme", "--ticket", "4711")

    assert (code, err) == (0, "")
    checks = lines_of(out)
    assert list(checks) == [
        "file", "secret", "connection", "redis", "token", "api route", "statuses", "agents",
        "teams", "ticket", "priorities", "rate limit", "batching",
    ]  # fmt: skip
    assert all(line.startswith("ok   ") for line in checks.values())
    assert f'client id "{DEMO_CLIENT_ID}", scope "all"' in checks["connection"]
    assert 'scope "all"' in checks["token"]
    assert " ms" in checks["token"]
    assert "6 read in" in checks["statuses"]
    assert "4 read for SLA 1 in" in checks["priorities"]
    configured = load_connections(connections_file)["acme"].rate_limit
    assert f"{configured} configured; Halo has stated no lower limit" in checks["rate limit"]
    assert out.splitlines()[-1] == "all 13 checks passed"
    assert DEMO_CLIENT_SECRET not in out
    # Through the worker's client: each request, the token's too, took the fleet's budget.
    sent = fake.requests()
    assert [r.method for r in sent] == ["POST"] + ["GET"] * 5
    assert fake.posts() == []
    assert redis_client.zcard("halo:rate:acme") == len(sent)


def test_doctor_says_whether_the_connections_backlog_is_batched_and_what_halo_showed(
    cli: Cli, redis_client: redis.Redis
) -> None:
    learned = Learned(redis_client)

    code, out, _ = cli("doctor", "acme")
    assert code == 0
    assert lines_of(out)["batching"].startswith(
        "ok   batching    auto, not on yet: Halo has not shown that its list reads honour ticketids"
    )

    learned.saw_list_read("acme", honoured=True, page_cap=25)
    learned.saw_post_answer("acme", every=False)
    _, out, _ = cli("doctor", "acme")
    shown = lines_of(out)["batching"]
    assert shown.startswith("ok   batching    on: list reads honour ticketids (seen ")
    assert "Halo cuts list pages to 25, so batches hold no more" in shown
    assert "so batches POST job by job" in shown

    learned.saw_list_read("acme", honoured=False, page_cap=None)
    _, out, _ = cli("doctor", "acme")
    assert lines_of(out)["batching"].startswith(
        "warn batching    auto, off: a list read answered tickets it was not asked for"
    )
    assert "delete halo:learned:acme in Redis to have it looked at again" in out


def test_doctor_explains_invalid_client_and_exits_1(
    cli: Cli, fake: FakeHalo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "not-the-secret")

    code, out, _ = cli("doctor", "acme")

    assert code == 1
    checks = lines_of(out)
    assert checks["token"].startswith("FAIL token       401 invalid_client")
    assert "Halo issues a new client id when the API application is saved" in out
    assert "Halo answered: The client credentials are invalid." in out
    assert checks["halo reads"].startswith("skip")
    assert "not-the-secret" not in out
    assert [r.method for r in fake.requests()] == ["POST"]


def test_doctor_names_the_permission_a_403_means_is_missing(cli: Cli, fake: FakeHalo) -> None:
    fake.fail_next(status=403, body="Access is denied", path="/api/Team")

    code, out, _ = cli("doctor", "acme")

    assert code == 1
    checks = lines_of(out)
    assert checks["teams"] == (
        "FAIL teams       403: the API application's agent lacks permission to read teams"
    )
    assert "Halo answered: Access is denied" in out
    assert "fix: in Halo, give the API application's agent (or its role) access to teams" in out
    assert checks["statuses"].startswith("ok")
    assert checks["agents"].startswith("ok")


def test_doctor_shows_the_limit_it_learned_from_halos_429_text(
    cli: Cli, fake: FakeHalo, redis_client: redis.Redis, connections_file: Path
) -> None:
    configured = load_connections(connections_file)["acme"].rate_limit
    assert configured.requests > 100, "the fake's 429 must state a lower limit than configured"
    fake.fail_next(status=429, body=HALO_LIMIT_TEXT, path="/api/Status")

    code, out, _ = cli("doctor", "acme")

    assert code == 1
    checks = lines_of(out)
    assert checks["statuses"].startswith("FAIL statuses    429: Halo is rate limiting")
    assert f"Halo answered: {HALO_LIMIT_TEXT}" in out
    assert checks["rate limit"].startswith(
        f"warn rate limit  {configured} configured, but Halo stated 100/300s in a 429"
    )
    assert 'set rate_limit = "100/300s"' in out
    # Halo asked everyone to wait: the doctor sent nothing more, and said so.
    assert checks["agents"].startswith("FAIL agents      not sent:")
    assert redis_client.get("halo:rate:acme:learned") == "100/300000"


def test_doctor_goes_on_without_redis_and_says_what_that_means(
    cli: Cli, set_env: Callable[..., None]
) -> None:
    set_env(result_url=f"redis://:hunter2@127.0.0.1:{free_port()}/0")

    code, out, _ = cli("doctor", "acme")

    assert code == 0
    checks = lines_of(out)
    assert checks["redis"].startswith("warn redis       redis://127.0.0.1:")
    assert "not counted in the fleet's shared budget" in checks["redis"]
    assert "hunter2" not in out
    assert checks["token"].startswith("ok")
    assert checks["teams"].startswith("ok")
    assert "the learned limit is unknown (Redis unreachable)" in checks["rate limit"]


def test_doctor_says_where_a_missing_secret_goes_without_contacting_halo(
    cli: Cli, fake: FakeHalo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV)

    code, out, _ = cli("doctor", "acme")

    assert code == 1
    checks = lines_of(out)
    assert checks["secret"] == f"FAIL secret      {SECRET_ENV} is not set, or empty"
    assert checks["halo"].startswith("skip")
    assert fake.requests() == []


def test_doctor_lists_the_configured_connections_when_the_name_is_wrong(cli: Cli) -> None:
    code, out, _ = cli("doctor", "acmee")

    assert code == 1
    assert "has no [connections.acmee] (it has: acme)" in lines_of(out)["file"]


def test_doctor_says_check_the_url_when_halo_cannot_be_reached_or_has_no_such_api(
    cli: Cli, fake: FakeHalo, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake.fail_next(status=404, path="/api/Agent")

    code, out, _ = cli("doctor", "acme")

    assert code == 1
    assert lines_of(out)["agents"].startswith("FAIL agents      404: Halo has no such API endpoint")
    assert "fix: check url: it must be the Halo web address" in out

    nowhere = tmp_path / "connections.toml"
    nowhere.write_text(
        "[connections.acme]\n"
        f'url = "http://127.0.0.1:{free_port()}"\n'
        "allow_insecure_http = true\n"
        f'client_id = "{DEMO_CLIENT_ID}"\n'
        f'client_secret_env = "{SECRET_ENV}"\n'
    )
    monkeypatch.setenv("HALO_CONNECTIONS_FILE", str(nowhere))

    code, out, _ = cli("doctor", "acme")

    assert code == 1
    assert lines_of(out)["token"].startswith("FAIL token       cannot reach Halo: ConnectError")
    assert "fix: check url (host name, port) and the network" in out
