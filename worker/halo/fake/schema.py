"""Halo's `Faults` (ticket) schema: the extract shipped with the fake, and validation against it.

`faults_schema.json` beside this module holds, for every property of Halo's `Faults` schema, its
JSON type, format and nullability, cut from Halo's own OpenAPI document by `schema_extract`
(which also regenerates it); a unit test checks it still matches the document.

Validation is what Halo's deserialiser does to each element of a `POST /api/Tickets` array: an
unknown key or a value of the wrong JSON type is rejected with a 400 naming the key. `null` is
accepted for every key (the .NET binder leaves the field at its default; for `id` that default
is 0, which is why a null id creates a ticket).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any, Final

SCHEMA_FILE = "faults_schema.json"
QUERY_FILE = "query_params.json"
# What the shipped extracts (cut from the newest document the fixture follows) hold that Halo API
# v2 of September 2024 did not: a fake playing that build refuses these `Faults` members.
NOT_IN_2024_09: Final = frozenset({"team_id"})

# .NET's int32 and int64 bounds: a larger number does not deserialise into the field.
_INT_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


@functools.cache
def load_faults_schema() -> dict[str, Any]:
    """The shipped extract, parsed once per process.

    Returns:
        The dict `extract_faults_schema` produced. Treat it as read-only: it is shared.
    """
    text = resources.files("worker.halo.fake").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def load_query_params() -> dict[str, frozenset[str]]:
    """The query parameter names of each operation (`"GET /api/agent"`), from the shipped
    extract, parsed once per process."""
    text = resources.files("worker.halo.fake").joinpath(QUERY_FILE).read_text(encoding="utf-8")
    operations = json.loads(text)["operations"]
    return {name: frozenset(names) for name, names in operations.items()}


def unknown_query_params(method: str, path: str, names: list[str]) -> list[str] | None:
    """The query parameter names Halo's document does not list for this operation.

    Args:
        method: the HTTP method.
        path: the request path, normalised (lower case, e.g. `/api/tickets/4711`).
        names: the query parameter names sent.

    Returns:
        The unknown names (empty when all are known), or None when the document has no such
        operation (the route answers that itself).
    """
    operations = load_query_params()
    segments = path.split("/")
    for operation, known in operations.items():
        op_method, _, template = operation.partition(" ")
        parts = template.split("/")
        if op_method != method or len(parts) != len(segments):
            continue
        if all(
            p == s or (p.startswith("{") and p.endswith("}"))
            for p, s in zip(parts, segments, strict=True)
        ):
            # A literal path (`/api/agent/me`) wins over a template (`/api/agent/{id}`).
            exact = f"{method} {path}" in operations
            if exact and template != path:
                continue
            return sorted({name.lower() for name in names} - known)
    return None


def type_error(value: Any, prop: Mapping[str, Any]) -> str | None:
    """Why `value` does not fit the property `prop` of the extract, or None if it fits.

    Args:
        value: a decoded JSON value.
        prop: one entry of the extract's `properties`.

    Returns:
        A short reason (e.g. "expected integer, got string"), or None.
    """
    if value is None:
        return None
    expected = str(prop["type"])
    if not _is_json_type(value, expected):
        return f"expected {expected}, got {_json_name(value)}"
    bounds = _INT_BOUNDS.get(str(prop.get("format")))
    if expected == "integer" and bounds and not bounds[0] <= value <= bounds[1]:
        return f"{value} is outside the range of {prop['format']}"
    if expected == "array" and prop.get("items"):
        for index, item in enumerate(value):
            if item is not None and not _is_json_type(item, str(prop["items"])):
                return f"item {index}: expected {prop['items']}, got {_json_name(item)}"
    return None


def _is_json_type(value: Any, expected: str) -> bool:
    # bool is an int in Python but not in JSON: true is not a valid integer or number.
    if isinstance(value, bool):
        return expected == "boolean"
    checks: dict[str, type | tuple[type, ...]] = {
        "integer": int,
        "number": (int, float),
        "string": str,
        "array": list,
        "object": dict,
        "boolean": bool,
    }
    return isinstance(value, checks.get(expected, object))


def _json_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    names = {int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)
