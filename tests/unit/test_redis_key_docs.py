"""The Redis key table of docs/contract.md names every key `worker.keys` names, and no other;
and no other module spells a key.

Operators read that table to know what each key in their Redis is. `worker.keys` names every
key and stream the service uses: a constant for a fixed key (`DEFERRED`), a prefix a script
completes (`RESULT_PREFIX`), a builder for a key with run-time parts (`claim_key(job_id)`). The
test imports it: a builder called with `<>` for each part gives the key as the table writes it,
with `<>` for each `<...>`. So that the module stays the one home of the names, the test also
reads the rest of the source and fails on any string there that spells a key
(`"halo:deferred"`, `f"halo:claim:{job_id}"`) or a suffix added to one (`key + ":taken"`,
`f"{base}:pause"`, `KEYS[1] .. ':seq'` in a Lua script).
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

from worker import keys

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "docs" / "contract.md"
SOURCES = ("worker", "producers", "operators", "ops", "bench", "tests/harness")
KEYS_MODULE = ROOT / "worker" / "keys.py"
TABLE_HEADING = "### Redis keys"

# A whole key, or a key's start: "halo:" then key characters; `<>` marks a run-time part.
_KEY = re.compile(r"halo:[A-Za-z0-9_.:<>-]*")
# A suffix added to a key: ":taken", ":pause". Letters only, so ":replay-" (a job id) is not one.
_SUFFIX = re.compile(r":[a-z]+")
_LUA_SUFFIX = re.compile(r"\.\.\s*'(:[a-z]+)'")
_PLACEHOLDER = re.compile(r"<[^<>]*>")
_RUN_TIME = "<>"


def module_keys() -> tuple[set[str], set[str]]:
    """The keys `worker.keys` names, with `<>` for each run-time part, and the suffixes its
    builders add to a key they are given (a lock's)."""
    found: set[str] = set()
    suffixes: set[str] = set()
    for name, value in vars(keys).items():
        if name.startswith("_"):
            continue
        if isinstance(value, str) and value.startswith("halo:"):
            # A prefix (`halo:result:`) is completed by a job id at run time.
            found.add(value + _RUN_TIME if value.endswith(":") else value)
        elif inspect.isfunction(value) and value.__module__ == keys.__name__:
            parameters = inspect.signature(value).parameters.values()
            required = [p for p in parameters if p.default is inspect.Parameter.empty]
            built = value(*[_RUN_TIME] * len(required))
            assert isinstance(built, str), f"worker.keys.{name} does not build a key"
            if built.startswith("halo:"):
                found.add(built)
            else:
                assert built.startswith(_RUN_TIME), f"worker.keys.{name} builds {built!r}"
                suffixes.add(built.removeprefix(_RUN_TIME))
    return found, suffixes


def documented_keys() -> set[str]:
    """The first column of the Redis key table, with `<>` for each `<...>`."""
    text = CONTRACT.read_text(encoding="utf-8")
    assert TABLE_HEADING in text, f"{CONTRACT} has no {TABLE_HEADING!r} section"
    section = text.split(TABLE_HEADING, 1)[1].split("\n#", 1)[0]
    documented = set()
    for line in section.splitlines():
        if cell := re.match(r"\|\s*`([^`]+)`\s*\|", line):
            documented.add(_PLACEHOLDER.sub(_RUN_TIME, cell[1]))
    assert documented, f"the {TABLE_HEADING!r} section of {CONTRACT} holds no table of keys"
    return documented


def _with_placeholders(node: ast.JoinedStr) -> str:
    """An f-string's text with `<>` for each replacement field."""
    return "".join(
        str(part.value) if isinstance(part, ast.Constant) else _RUN_TIME for part in node.values
    )


def _strings(tree: ast.AST) -> Iterator[str]:
    """Every string literal, f-strings with `<>` placeholders and not split into parts."""
    parts_of_fstrings = {
        id(part)
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        for part in node.values
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            yield _with_placeholders(node)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in parts_of_fstrings
        ):
            yield node.value


def keys_spelled_outside_the_keys_module() -> list[str]:
    """`path: text` for each string outside `worker.keys` that spells a key or a key suffix."""
    spelled = []
    for package in SOURCES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == KEYS_MODULE:
                continue
            where = path.relative_to(ROOT)
            for text in _strings(ast.parse(path.read_text(encoding="utf-8"))):
                suffix = text.removeprefix(_RUN_TIME)
                if _KEY.fullmatch(text) or _SUFFIX.fullmatch(suffix):
                    spelled.append(f"{where}: {text!r}")
                spelled += [f"{where}: Lua {s!r}" for s in _LUA_SUFFIX.findall(text)]
    return spelled


def test_every_key_the_keys_module_names_is_in_the_contracts_key_table() -> None:
    named, suffixes = module_keys()
    documented = documented_keys()
    assert len(named) >= 30, "few keys found in worker.keys: the extraction itself is broken"
    assert sorted(named - documented) == [], f"keys missing from {CONTRACT.name}'s key table"
    unexplained = {
        s for s in suffixes if not any(named_key + s in documented for named_key in named)
    }
    assert sorted(unexplained) == [], "key suffixes with no key in the table that ends with them"


def test_every_key_in_the_contracts_key_table_is_named_by_the_keys_module() -> None:
    named, suffixes = module_keys()
    derived = {key + suffix for key in named for suffix in suffixes}
    stale = documented_keys() - named - derived
    assert sorted(stale) == [], f"keys in {CONTRACT.name}'s key table that worker.keys lacks"


def test_no_module_but_the_keys_module_spells_a_redis_key() -> None:
    assert keys_spelled_outside_the_keys_module() == [], "import these from worker.keys"
