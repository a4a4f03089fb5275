"""The import rules of docs/architecture.md, checked on the source (module-level imports).

Celery stays at the edge: only the glue modules import it, so the job's steps, the result store
and the Halo client can be read, tested and reused without a broker. The Halo client knows
nothing of jobs' lifecycle, and the core knows nothing of the glue.

The benchmark (`bench/`) and the process harness (`tests/harness/`) start and drive the worker,
so they may import it; the worker, the producers and the operator tools never import either.
`ops/` holds deployment and operations files: its one Python module is the lock audit.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The worker modules that may import Celery or kombu: the app and its tasks, the message intake
# (strategy, consumer, transport), the publisher, and what shows a job to Flower.
CELERY_EDGE = frozenset(
    {
        "worker.app",
        "worker.tasks",
        "worker.celeryconfig",
        "worker.strategy",
        "worker.consumer",
        "worker.transport",
        "worker.publishing",
        "worker.liveness",
        "worker.outcomes",
    }
)
# What the Halo client package may use of the rest of the worker: the contract and its
# configuration, never a job's lifecycle.
HALO_MAY_IMPORT = frozenset(
    {"worker.connections", "worker.errors", "worker.keys", "worker.models", "worker.ratelimit"}
)
# The job's steps and the state they keep: no Celery, no glue.
CORE = (
    "worker.runner",
    "worker.update",
    "worker.journal",
    "worker.applied",
    "worker.batch",
    "worker.admission",
    "worker.endings",
    "worker.runs",
    "worker.members",
    "worker.batchread",
    "worker.results",
    "worker.records",
    "worker.claims",
    "worker.deferred",
    "worker.tickets",
    "worker.ticketscripts",
    "worker.backlog",
    "worker.dispatcher",
    "worker.governor",
    "worker.ratescripts",
    "worker.templating",
    "worker.expressions",
    "worker.models",
    "worker.models.job",
    "worker.models.record",
    "worker.models.redaction",
    "worker.errors",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports at module level or inside functions (absolute imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def modules(package: str) -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in sorted((ROOT / package).rglob("*.py"))}


WORKER = modules("worker")


def touches(imported: set[str], prefix: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for name in imported)


def test_the_rule_finds_the_modules_it_speaks_of() -> None:
    assert set(CORE) <= set(WORKER)
    assert set(WORKER) >= CELERY_EDGE
    assert touches(WORKER["worker.tasks"], "celery")


@pytest.mark.parametrize("name", sorted(set(WORKER) - CELERY_EDGE))
def test_only_the_glue_imports_celery_or_kombu(name: str) -> None:
    imported = WORKER[name]
    assert not touches(imported, "celery"), f"{name} imports Celery"
    assert not touches(imported, "kombu"), f"{name} imports kombu"


@pytest.mark.parametrize("name", CORE)
def test_the_jobs_steps_import_no_glue(name: str) -> None:
    glue = CELERY_EDGE | {"worker.runtime", "worker.metrics", "worker.sentry"}
    used = {g for g in glue if touches(WORKER[name], g)}
    assert not used, f"{name} imports {sorted(used)}"


@pytest.mark.parametrize("name", sorted(n for n in WORKER if n.startswith("worker.halo")))
def test_the_halo_client_knows_the_contract_but_no_jobs_lifecycle(name: str) -> None:
    from_worker = {
        i for i in WORKER[name] if i.startswith("worker.") and not i.startswith("worker.halo")
    }
    # `from worker.errors import X` also lists `worker.errors.X`: judge by the module.
    outside = {i for i in from_worker if not any(touches({i}, m) for m in HALO_MAY_IMPORT)}
    assert not outside, f"{name} imports {sorted(outside)}"


def test_the_worker_producers_and_operators_never_import_the_fake_halo() -> None:
    for package in ("worker", "producers", "operators"):
        for name, imported in modules(package).items():
            assert not touches(imported, "fakehalo"), f"{name} imports the fake Halo"


def test_the_bench_and_the_harness_drive_the_worker_from_outside() -> None:
    bench = modules("bench")
    assert touches(bench["bench.rig"], "tests.harness")
    assert touches(bench["bench.rig"], "worker")
    assert touches(modules("tests/harness")["tests.harness.demo"], "producers")


@pytest.mark.parametrize("package", ["worker", "producers", "operators"])
def test_the_shipped_packages_never_import_the_bench_or_the_tests(package: str) -> None:
    for name, imported in modules(package).items():
        for outside in ("bench", "tests"):
            assert not touches(imported, outside), f"{name} imports {outside}"


def test_ops_holds_no_test_or_bench_code() -> None:
    # `ops/audit.py` is `make audit`: the check of the image's locked packages.
    python = {path.relative_to(ROOT).as_posix() for path in (ROOT / "ops").rglob("*.py")}
    stray = sorted(python - {"ops/__init__.py", "ops/audit.py"})
    assert not stray, f"ops/ holds deployment files: move {stray} to bench/ or tests/harness/"
