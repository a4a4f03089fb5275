"""The Redis key table of docs/contract.md names every key the code uses, and no other.

Operators read that table to know what each key in their Redis is. The code spells its keys in
several modules, so this test reads them from the source: every string that is a whole key
(`"halo:deferred"`), every f-string that starts one (`f"halo:claim:{job_id}"`), and every
suffix added to a key (`key + ":taken"`, `f"{base}:pause"`, and `KEYS[1] .. ':seq'` in the Lua
scripts). A key is written in the table with `<...>` for each part filled in at run time.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "docs" / "contract.md"
SOURCES = ("worker", "producers", "operators")
TABLE_HEADING = "### Redis keys"

# A whole key, or a key's start: "halo:" then key characters; `<>` marks a run-time part.
_KEY = re.compile(r"halo:[A-Za-z0-9_.:<>-]*")
# A suffix added to a key: ":taken", ":pause". Letters only, so ":replay-" (a job id) is not one.
_SUFFIX = re.compile(r":[a-z]+")
_LUA_SUFFIX = re.compile(r"\.\.\s*'(:[a-z]+)'")
_PLACEHOLDER = re.compile(r"<[^<>]*>")


def _with_placeholders(node: ast.JoinedStr) -> str:
    """An f-string's text with `<>` for each replacement field."""
    return "".join(
        str(part.value) if isinstance(part, ast.Constant) else "<>" for part in node.values
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


def code_keys() -> tuple[set[str], set[str]]:
    """The keys (whole or started) and the key suffixes spelled in the service's source."""
    keys: set[str] = set()
    suffixes: set[str] = set()
    for package in SOURCES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for text in _strings(ast.parse(path.read_text(encoding="utf-8"))):
                if _KEY.fullmatch(text):
                    keys.add(text)
                elif _SUFFIX.fullmatch(text):
                    suffixes.add(text)
                elif text.startswith("<>") and _SUFFIX.fullmatch(text[2:]):
                    suffixes.add(text[2:])
                suffixes.update(_LUA_SUFFIX.findall(text))
    return keys, suffixes


def documented_keys() -> set[str]:
    """The first column of the Redis key table, with `<>` for each `<...>`."""
    text = CONTRACT.read_text(encoding="utf-8")
    assert TABLE_HEADING in text, f"{CONTRACT} has no {TABLE_HEADING!r} section"
    section = text.split(TABLE_HEADING, 1)[1].split("\n#", 1)[0]
    keys = set()
    for line in section.splitlines():
        if cell := re.match(r"\|\s*`([^`]+)`\s*\|", line):
            keys.add(_PLACEHOLDER.sub("<>", cell[1]))
    assert keys, f"the {TABLE_HEADING!r} section of {CONTRACT} holds no table of keys"
    return keys


def test_every_redis_key_the_code_uses_is_in_the_contracts_key_table() -> None:
    keys, suffixes = code_keys()
    documented = documented_keys()
    assert keys, "no key found in the source: the extraction itself is broken"
    assert sorted(keys - documented) == [], f"keys missing from {CONTRACT.name}'s key table"
    unexplained = {s for s in suffixes if not any(d.endswith(s) for d in documented)}
    assert sorted(unexplained) == [], "key suffixes with no key in the table that ends with them"


def test_every_key_in_the_contracts_key_table_is_used_by_the_code() -> None:
    keys, suffixes = code_keys()
    derived = {key + suffix for key in keys for suffix in suffixes}
    stale = documented_keys() - keys - derived
    assert sorted(stale) == [], f"keys in {CONTRACT.name}'s key table that no code uses"
