"""Which package may import which: the rule each package's `__init__` docstring states.

- `producers` (what a rule runner imports) depends on the worker's contract only: importing it
  loads none of the worker's internals, its HTTP client or its Celery tasks.
- `operators` (`halo-jobs` and its tools) reaches the worker's state through
  `worker.operations` only: it imports none of the modules that own the worker's Redis keys,
  and spells none of those keys.
- `worker` imports neither of them.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

ROOT = Path(__file__).resolve().parents[2]

# The worker modules a producer may load: the contract (the job, the record, the error codes,
# the configuration of §5, the key names of `worker.keys`, which imports nothing, and the job
# message of `worker.publishing`, the one way a job goes on the queue) and `worker.handoff`
# (what the Python producer and the workers leave each other beside the contract).
# `worker.celeryconfig` comes with `worker.publishing`, which takes the batch task's name from
# it; it imports only kombu, the models and the settings.
PRODUCER_MAY_LOAD: Final = frozenset(
    {
        "worker",
        "worker.celeryconfig",
        "worker.errors",
        "worker.handoff",
        "worker.keys",
        "worker.models",
        "worker.models.job",
        "worker.models.record",
        "worker.models.redaction",
        "worker.publishing",
        # How to connect (contract §5: Sentinel and TLS) and how an accepted job's tracking
        # entry reaches the replicas before `submit` returns.
        "worker.redisconn",
        "worker.replication",
        "worker.settings",
    }
)
# What must never come with the producer API: the worker's HTTP stack, its Celery tasks, its
# job runner and its Halo client.
PRODUCER_MUST_NOT_LOAD: Final = ("httpx", "worker.tasks", "worker.runner", "worker.halo")

# The worker modules an operator tool may import: the contract, the operations API, and the
# libraries preview and doctor run a job's reads with (the Halo client, the update planner).
OPERATORS_MAY_IMPORT: Final = frozenset(
    {
        "worker.connections",
        "worker.errors",
        "worker.models",
        "worker.operations",
        "worker.settings",
        "worker.update",
    }
)
OPERATORS_MAY_IMPORT_UNDER: Final = ("worker.halo.",)
# Of `worker.keys`, an operator tool may name the contract's keys only: the record and the feed.
OPERATORS_MAY_IMPORT_KEYS: Final = frozenset({"RESULTS_STREAM", "RESULT_PREFIX", "result_key"})

_LOADED_BY_PRODUCERS = """
import json, sys
import producers, producers.jobs, producers.feed, producers.waiting
print(json.dumps(sorted(sys.modules)))
"""


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> Iterator[str]:
    """Every module `path` imports, `from worker import x` counted as `worker.x`, and every
    name it imports from a module, as `module.name`."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _worker_modules() -> set[str]:
    return {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in _modules("worker")
    }


def _strings_outside_docstrings(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or id(node) in docstrings:
            continue
        if isinstance(node.value, str):
            yield node.lineno, node.value


def test_importing_the_producer_api_loads_only_the_workers_contract_and_handoff() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", _LOADED_BY_PRODUCERS],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    modules = json.loads(loaded.stdout)

    assert [m for m in modules if m.startswith(PRODUCER_MUST_NOT_LOAD)] == []
    assert [m for m in modules if m == "operators" or m.startswith("operators.")] == []
    worker = {m for m in modules if m == "worker" or m.startswith("worker.")}
    assert worker - PRODUCER_MAY_LOAD == set(), (
        "producers loaded worker modules outside the contract; if one is contract, add it to "
        "PRODUCER_MAY_LOAD and to the rule in producers/__init__.py"
    )


def test_the_operator_tools_import_the_workers_state_only_through_its_operations_api() -> None:
    worker_modules = _worker_modules()
    imported = [(path, name) for path in _modules("operators") for name in _imports(path)]
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path, name in imported
        if name in worker_modules
        and name not in OPERATORS_MAY_IMPORT
        and not name.startswith(OPERATORS_MAY_IMPORT_UNDER)
        and name not in ("worker", "worker.keys")
    ]
    keys = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path, name in imported
        if name.startswith("worker.keys.")
        and name.removeprefix("worker.keys.") not in OPERATORS_MAY_IMPORT_KEYS
    ]

    assert wrong == []
    assert keys == []


def test_no_operator_tool_spells_a_redis_key_of_the_worker() -> None:
    spelled = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in _modules("operators")
        for line, text in _strings_outside_docstrings(path)
        if "halo:" in text
    ]

    assert spelled == []


def test_the_worker_imports_neither_the_producers_nor_the_operator_tools() -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _modules("worker")
        for name in _imports(path)
        if name.split(".")[0] in ("producers", "operators")
    ]

    assert wrong == []
