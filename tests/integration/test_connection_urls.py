"""Connections written the way users paste Halo's URLs, end to end: a real worker, the fake Halo
over HTTP, and `halo-jobs doctor`.

The module's worker has four connections to the fake: `asshown` (the Resource Server and
Authorisation Server URLs exactly as Halo's API settings page shows them), `resource` (only
the Resource Server URL, with a trailing slash), `aliases` (the page's own names for the two
keys), and `portal`, whose url leads to a web server that is not Halo's API (every path
answers 404) while its tokens come from the fake, so its reads arrive with a valid token.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from fakehalo import DEMO_CLIENT_ID, FakeHalo
from operators.cli import main
from producers.jobs import Producer
from tests.harness.processes import ProcessError, WorkerProcess
from tests.integration.harness import SECRET_ENV, new_job, run_job
from worker.settings import get_settings

Cli = Callable[[str], tuple[int, str]]


class _NotHalo(BaseHTTPRequestHandler):
    """A web server with no Halo API: 404 to every request, as a wrong host answers."""

    def _not_found(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<html><body><h1>404 Not Found</h1></body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _not_found  # noqa: N815 - the names http.server calls

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@pytest.fixture(scope="module")
def portal_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotHalo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def connection(name: str, **urls: str) -> str:
    lines = "".join(f'{key} = "{value}"\n' for key, value in urls.items())
    return (
        f"[connections.{name}]\n{lines}"
        f'client_id = "{DEMO_CLIENT_ID}"\nclient_secret_env = "{SECRET_ENV}"\n'
        "allow_insecure_http = true\n"
        # As in the other integration tests: a 2 s window, so a 429 costs seconds, not minutes.
        'rate_limit = "200/2s"\n\n'
    )


@pytest.fixture(scope="module")
def pasted_connections(
    tmp_path_factory: pytest.TempPathFactory, halo_url: str, portal_url: str
) -> Path:
    path = tmp_path_factory.mktemp("pasted") / "connections.toml"
    path.write_text(
        connection("asshown", url=f"{halo_url}/api", auth_url=f"{halo_url}/auth")
        + connection("resource", url=f"{halo_url}/api/")
        + connection(
            "aliases",
            resource_server=f"{halo_url}/api",
            authorisation_server=f"{halo_url}/auth/token",
        )
        + connection("portal", url=portal_url, auth_url=f"{halo_url}/auth")
    )
    return path


@pytest.fixture(scope="module")
def worker(
    env_for: Callable[..., dict[str, str]],
    pasted_connections: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    env = {**env_for(), "HALO_CONNECTIONS_FILE": str(pasted_connections)}
    logs = tmp_path_factory.mktemp("pasted-worker")
    process = WorkerProcess(env, logs / "worker.log", name="connection-urls").start()
    yield process
    process.stop(timeout_s=15)


@pytest.fixture
def doctor(
    monkeypatch: pytest.MonkeyPatch,
    env_for: Callable[..., dict[str, str]],
    pasted_connections: Path,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Cli]:
    """Runs `halo-jobs doctor NAME` in this process with the module's connections file."""
    for key, value in env_for().items():
        if key.startswith("HALO_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("HALO_CONNECTIONS_FILE", str(pasted_connections))

    def run(name: str) -> tuple[int, str]:
        get_settings.cache_clear()
        code = main(["doctor", name])
        return code, capsys.readouterr().out

    yield run
    get_settings.cache_clear()


def lines_of(out: str) -> dict[str, str]:
    """The report's check lines by check name."""
    statuses = ("ok", "FAIL", "warn", "skip")
    return {line[5:16].strip(): line for line in out.splitlines() if line[:4].strip() in statuses}


@pytest.mark.parametrize(
    ("name", "ticket_id"), [("asshown", 4711), ("resource", 4712), ("aliases", 4713)]
)
def test_a_connection_written_with_the_urls_halo_shows_updates_tickets(
    worker: WorkerProcess, producer: Producer, fake: FakeHalo, name: str, ticket_id: int
) -> None:
    del worker
    record = run_job(
        producer,
        new_job(connection=name, ticket_id=str(ticket_id), summary=f"pasted from Halo: {name}"),
    )

    assert record["outcome"] == "succeeded", record["error"]
    assert fake.ticket(ticket_id)["summary"] == f"pasted from Halo: {name}"  # type: ignore[index]
    paths = [request.path for request in fake.requests()]
    assert f"/api/Tickets/{ticket_id}" in paths
    assert not [p for p in paths if p.lower().startswith(("/api/api", "/api/auth"))], paths
    assert all(request.status in (200, 201) for request in fake.requests()), paths


def test_a_url_that_is_not_halos_api_fails_naming_the_url_and_never_ticket_not_found(
    worker: WorkerProcess,
    producer: Producer,
    fake: FakeHalo,
    portal_url: str,
    redis_client: redis.Redis,
) -> None:
    del worker
    first = run_job(producer, new_job(connection="portal", ticket_id="4711", status="Closed"))
    later = [
        run_job(producer, new_job(connection="portal", ticket_id=str(tid), summary="x"))
        for tid in (4712, 4713)
    ]

    for record in [first, *later]:
        assert record["outcome"] == "failed"
        error = record["error"]
        assert error["code"] == "halo_unexpected_response", error
        assert error["retryable"] is False
        assert error["message"].startswith(
            f"connection 'portal': Halo's API is not at url {portal_url}: "
            f"GET {portal_url}/api/Status answered 404"
        )
    # The first job found out (its read, then the check); the others were failed without a
    # request, from the verdict the fleet keeps.
    assert first["halo_requests"] >= 2
    assert [record["halo_requests"] for record in later] == [0, 0]
    assert '"answers": false' in (redis_client.get("halo:learned:portal:route") or "")
    assert fake.posts() == []


def test_a_worker_refuses_a_url_path_that_cannot_lead_to_halo_naming_the_connection_and_key(
    env_for: Callable[..., dict[str, str]], halo_url: str, tmp_path: Path
) -> None:
    wrong = tmp_path / "connections.toml"
    wrong.write_text(connection("acme", url=f"{halo_url}/halo/api"))
    env = {**env_for(), "HALO_CONNECTIONS_FILE": str(wrong)}
    process = WorkerProcess(env, tmp_path / "worker.log", name="wrong-path")
    try:
        with pytest.raises(ProcessError, match="exited"):
            process.start(timeout_s=30)
    finally:
        process.stop(timeout_s=15)
    assert f"connections.acme.url: path '/halo/api' of '{halo_url}/halo/api'" in (
        process.log_text()
    )


def test_doctor_reads_the_pasted_urls_and_reports_that_halos_api_answers(
    doctor: Cli, fake: FakeHalo, halo_url: str
) -> None:
    code, out = doctor("asshown")

    assert code == 0, out
    checks = lines_of(out)
    assert checks["connection"].startswith(f"ok   connection  {halo_url}/api, client id")
    assert f"by {halo_url}/auth/token" in checks["token"]
    assert checks["api route"].startswith(
        f"ok   api route   {halo_url}/api answers (GET /api/Status: 200 in "
    )
    assert [r.path for r in fake.requests()][:2] == ["/auth/token", "/api/Status"]


def test_doctor_fails_the_route_check_where_halos_api_does_not_answer_and_names_the_url(
    doctor: Cli, portal_url: str
) -> None:
    code, out = doctor("portal")

    assert code == 1
    checks = lines_of(out)
    assert checks["token"].startswith("ok")
    assert checks["api route"] == (
        f"FAIL api route   404: Halo's API is not at {portal_url}/api (GET /api/Status)"
    )
    assert f"fix: url is {portal_url}; set it to the Halo web address" in out
    assert "statuses" not in checks
    assert checks["halo reads"].startswith("skip")
