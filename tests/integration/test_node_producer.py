"""A Node.js ingestion system: docs/examples/node-producer/submit.js, on celery-node from npm.

celery-node sends Celery protocol 2 with sparse headers (`lang: js`, `task`, `id`; no
`argsrepr`) and a task id of its own, a UUID unrelated to the job's `job_id`. Each job ends in
one record under its `job_id` (the task id when it has none), once, also when submitted twice,
and its variables show in no task event and no log line.

Needs `node` and `npm` (CI has them); skipped where either is missing, CI included: the one
exception to this suite's rule, allowed for this test. The example's locked packages are
installed once, with `npm ci`, into a temporary folder, and the example's own submit.js runs
against them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fakehalo import FakeHalo
from tests.harness.processes import RedisServer
from tests.integration.foreign import Fleet, marked_job
from tests.integration.harness import Job, feed_entries, wait_for_deliveries

pytest_plugins = ["tests.integration.fixtures_foreign"]

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "node-producer"
# The version docs/producers.md says was checked; package.json pins it exactly.
CELERY_NODE_VERSION = "0.5.9"
# A cold `npm ci` of the example's 31 packages takes about 10 s; this bounds a hung registry.
NPM_TIMEOUT_S = 100
NODE_TIMEOUT_S = 30

# celery-node's own way to send a task, as a long-running Node service would call it:
# applyAsync makes the task id (a UUID) and pushes in the background, so the script waits for
# the microtasks that issue the push before it closes the connection (Redis runs commands in
# order, so the push precedes QUIT).
APPLY_ASYNC_JS = """
const { createClient } = require("celery-node");
const [url, jobText] = process.argv.slice(1);
const client = createClient(url, url, "halo");
client.isReady().then(() => {
  const result = client.createTask("halo.update_ticket").applyAsync([JSON.parse(jobText)]);
  setImmediate(() => client.disconnect().then(() => console.log(result.taskId)));
});
"""


@pytest.fixture(scope="module")
def node_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's packages, installed from its lock file; skips where node or npm is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not on the PATH; the celery-node producer test needs both")
    folder = tmp_path_factory.mktemp("node-producer")
    for name in ("package.json", "package-lock.json"):
        shutil.copy(EXAMPLE / name, folder / name)
    installed = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT_S,
        check=False,
    )
    assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}\n{installed.stderr}"
    pinned = json.loads((EXAMPLE / "package.json").read_text())["dependencies"]["celery-node"]
    manifest = json.loads((folder / "node_modules/celery-node/package.json").read_text())
    assert pinned == manifest["version"] == CELERY_NODE_VERSION
    return folder / "node_modules"


def node(node_path: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Runs `node ARGS...` resolving packages from the installed example's node_modules."""
    return subprocess.run(
        ["node", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "NODE_PATH": str(node_path)},
        timeout=NODE_TIMEOUT_S,
        check=False,
    )


def submit(node_path: Path, redis_url: str, job: Job) -> dict[str, str]:
    """Submit a job with the example's submit.js; returns what it printed (job_id, task_id)."""
    done = node(node_path, str(EXAMPLE / "submit.js"), redis_url, "-", stdin=json.dumps(job))
    assert done.returncode == 0, done.stderr
    printed: dict[str, str] = json.loads(done.stdout)
    return printed


@pytest.mark.parametrize("with_job_id", [True, False], ids=["own-job-id", "no-job-id"])
def test_the_node_example_gets_one_record_per_job_under_its_job_id_or_task_id(
    node_path: Path,
    foreign_fleet: Fleet,
    redis_server: RedisServer,
    fake: FakeHalo,
    with_job_id: bool,
) -> None:
    job, marker = marked_job(with_job_id=with_job_id)

    ids = submit(node_path, redis_server.url, job)

    assert ids["task_id"] != job.get("job_id")  # celery-node's own UUID
    assert ids["job_id"] == job.get("job_id", ids["task_id"])
    foreign_fleet.recorded_once(job, key=ids["job_id"], task_id=ids["task_id"], marker=marker)
    assert len(fake.posts()) == 1


def test_celery_node_apply_async_gets_a_record_under_the_job_id(
    node_path: Path, foreign_fleet: Fleet, redis_server: RedisServer, fake: FakeHalo
) -> None:
    job, marker = marked_job(with_job_id=True)

    sent = node(node_path, "-e", APPLY_ASYNC_JS, redis_server.url, json.dumps(job))

    assert sent.returncode == 0, sent.stderr
    task_id = sent.stdout.strip()
    foreign_fleet.recorded_once(job, key=job["job_id"], task_id=task_id, marker=marker)
    assert len(fake.posts()) == 1


def test_a_job_submitted_twice_from_node_updates_halo_once(
    node_path: Path, foreign_fleet: Fleet, redis_server: RedisServer, fake: FakeHalo
) -> None:
    job, marker = marked_job(with_job_id=True)

    first = submit(node_path, redis_server.url, job)
    record = foreign_fleet.recorded_once(
        job, key=job["job_id"], task_id=first["task_id"], marker=marker
    )
    second = submit(node_path, redis_server.url, job)

    assert second["task_id"] != first["task_id"]
    assert wait_for_deliveries(foreign_fleet.worker, second["task_id"], 1) == ["duplicate"]
    assert foreign_fleet.producer.result(job["job_id"]) == record
    assert [f["job_id"] for _, f in feed_entries(foreign_fleet.redis_client)] == [job["job_id"]]
    assert len(fake.posts()) == 1
